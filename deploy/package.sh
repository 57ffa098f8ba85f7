#!/usr/bin/env bash
# `make package`: the stage's stack for CloudFormation/SAM (OUT/sam) and for Terraform (OUT/terraform).
#
# Chalice declares the functions, the REST API, the tick schedule, the SQS event sources and the
# WebSocket API. What it cannot declare comes from deploy/:
#   sam-merge.json            merged by `chalice package --merge-template`: the dispatch queue and its
#                             dead-letter queue, the fan-out queue (no dead-letter queue: its chunks
#                             are best-effort and worthless after 5 minutes), each event source
#                             re-pointed at its queue (so CloudFormation creates the queue first), the
#                             environment the code reads (queue URLs, WebSocket management endpoint,
#                             where the secrets are kept) from Ref/GetAtt, the secrets, each function's
#                             log group, stage throttling and reserved concurrency (README, Security),
#                             and one IAM policy scoped to those resources for every function role.
#                             It also creates an ElastiCache Serverless cache (Valkey) and its security
#                             group, unless the RedisUrl parameter names a Redis, and gives every
#                             function REDIS_URL (the cache's rediss:// endpoint, or RedisUrl).
#   terraform/*.tf.json       Chalice refuses --merge-template for Terraform; Terraform itself merges
#                             every *.tf.json of a directory and applies *_override.tf.json on top
#                             (which replaces each role's policy with one pinned to this stack).
# An event source's queue is given as {"Fn::Sub": "${DispatchQueue.Arn}"} (and "${FanoutQueue.Arn}"),
# not Fn::GetAtt: Chalice deep-merges dictionaries and writes its own
# {"Fn::Sub": "...:punctual-dispatch"} there, so only a Fn::Sub replaces it (a Fn::GetAtt would sit
# beside it as a second, invalid key).
# PUBLIC_API_URL (agents' callbackUrl) is set on the tick and dispatch functions only: the REST API
# refers to the API handler, so the handler referring back to the REST API would be a cycle.
# The WebSocket stage in the management endpoint is the literal "api" (api_gateway_stage) for the
# same reason: the stage depends on the routes, which depend on the functions.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)"
STAGE="${2:-prod}"
CHALICE="${CHALICE:-$ROOT/.venv/bin/chalice}"
# chalice package wants a region; the templates it writes are region-neutral (AWS::Region, data.aws_region).
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
# The event sources' queue names are read by app.py when Chalice imports it; Terraform and the prod
# policy file expect the default names.
unset DISPATCH_QUEUE_NAME
unset FANOUT_QUEUE_NAME

cd "$ROOT"
rm -rf "$OUT/sam" "$OUT/terraform"
"$CHALICE" package --stage "$STAGE" --merge-template deploy/sam-merge.json "$OUT/sam"
# The cache the template creates sits in the functions' subnets and lets their security group in:
# both default to the stage's subnet_ids and security_group_ids.
"$ROOT/.venv/bin/python" - "$OUT/sam/sam.json" "$STAGE" <<'PY'
import json, sys
path, stage = sys.argv[1], sys.argv[2]
config = json.load(open(".chalice/config.json"))["stages"].get(stage, {})
template = json.load(open(path))
parameters = template["Parameters"]
if config.get("subnet_ids"):
    parameters["CacheSubnetIds"]["Default"] = ",".join(config["subnet_ids"])
if config.get("security_group_ids"):
    parameters["FunctionSecurityGroupId"]["Default"] = config["security_group_ids"][0]
json.dump(template, open(path, "w"), indent=2)
PY
"$CHALICE" package --stage "$STAGE" --pkg-format terraform "$OUT/terraform"
cp deploy/terraform/*.tf.json "$OUT/terraform/"
echo "CloudFormation/SAM: $OUT/sam/sam.json   Terraform: $OUT/terraform/"
