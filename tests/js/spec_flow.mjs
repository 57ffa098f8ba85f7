// The agent spec's own examples (spec/agent-scheduling-api.md, "Examples"), run against the local
// stack by tests/e2e/test_spec_client_e2e.py. Changed from the spec: the URLs (the spec's are
// relative), and io()'s options for API Gateway's WebSocket routes (WebSocket transport only, the
// stage as the path, no trailing slash). Prints what it saw as one JSON line.
import { io } from "socket.io-client";

const { API, WS, TOKEN } = process.env;
const fetch = (path, init) => globalThis.fetch(API + path, init);
const options = (token) => ({
  auth: { token },
  transports: ["websocket"],
  path: "/api",
  addTrailingSlash: false,
});
const seen = { events: [], progress: [], monitoring: [] };
const waitFor = (socket, event) => new Promise((resolve) => socket.once(event, resolve));
setTimeout(() => { console.log(JSON.stringify({ ...seen, timedOut: true })); process.exit(2); }, 60_000);

// A wrong token: connect_error.
const refused = io(WS, { ...options("wrong"), reconnection: false });
seen.connectError = await new Promise((resolve, reject) => {
  refused.on("connect_error", (err) => resolve(err.message));
  refused.on("connect", () => reject(new Error("connected with a wrong token")));
});

const socket = io(WS, options(TOKEN));
await waitFor(socket, "connect");
seen.connected = socket.connected;

// ### Complete Scheduling Flow
// 1. Schedule an agent
const scheduleResponse = await fetch('/api/agents/agent-123/schedule', {
  method: 'POST',
  headers: {
    'Content-Type': 'application/json',
    'Authorization': `Bearer ${TOKEN}`
  },
  body: JSON.stringify({
    cronExpression: '0 */6 * * *', // Every 6 hours
    priority: 'HIGH',
    enabled: true
  })
});
seen.scheduled = { status: scheduleResponse.status, body: await scheduleResponse.json() };

// 2. Subscribe to real-time updates
socket.emit('subscribe-agent-updates', 'agent-123');

for (const name of ['agent:started', 'agent:progress', 'agent:completed', 'agent:paused', 'agent:resumed']) {
  socket.on(name, (data) => seen.events.push({ name, data }));
}
socket.on('agent:started', (data) => {
  console.error('Agent started:', data);
});

socket.on('agent:progress', (data) => {
  seen.progress.push(`Progress: ${data.progress}% - ${data.message}`);
});

socket.on('agent:completed', (data) => {
  seen.completedIn = `Completed in ${data.duration}ms`;
});

// (Not in the spec: run it now, once the subscription is in; an acknowledgement says so.)
await socket.timeout(10_000).emitWithAck('ping');
const completed = waitFor(socket, 'agent:completed');
seen.run = (await fetch('/api/agents/agent-123/run', {
  method: 'POST', headers: { 'Authorization': `Bearer ${TOKEN}` }
})).status;
await completed;

// 3. Pause if needed
const paused = waitFor(socket, 'agent:paused');
const pauseResponse = await fetch('/api/agents/agent-123/schedule/agent-123/pause', {
  method: 'PATCH',
  headers: {
    'Authorization': `Bearer ${TOKEN}`
  }
});
seen.paused = pauseResponse.status;
await paused;

// 4. Resume when ready
const resumed = waitFor(socket, 'agent:resumed');
const resumeResponse = await fetch('/api/agents/agent-123/schedule/agent-123/resume', {
  method: 'PATCH',
  headers: {
    'Authorization': `Bearer ${TOKEN}`
  }
});
seen.resumed = resumeResponse.status;
await resumed;

// (An agent without a schedule, for the loop below: run once, registered from the template.)
seen.otherRun = (await fetch('/api/agents/agent-456/run', {
  method: 'POST', headers: { 'Authorization': `Bearer ${TOKEN}` }
})).status;

// ### Monitoring Multiple Agents
// Get all scheduled agents
const agents = await fetch('/api/agents', {
  headers: { 'Authorization': `Bearer ${TOKEN}` }
}).then(res => res.json());

// Subscribe to scheduler updates
const status = waitFor(socket, 'scheduler:status');
socket.emit('subscribe-scheduler-updates');

socket.on('scheduler:status', (data) => {
  seen.stats = data.stats;
});

// Check individual agent schedules
for (const agent of agents.data) {
  const schedule = await fetch(`/api/agents/${agent.id}/schedule`, {
    headers: { 'Authorization': `Bearer ${TOKEN}` }
  }).then(res => res.json());

  if (schedule.data.scheduleEnabled) {
    seen.monitoring.push(`${agent.name} next runs at: ${schedule.data.nextRunAt}`);
  } else {
    seen.monitoring.push(`${agent.name} has no enabled schedule`);
  }
}
await status;

socket.disconnect();
console.log(JSON.stringify(seen));
process.exit(0);
