"""`make package`: the stack a user deploys, checked offline the way CloudFormation will take it.

The packaging runs once for the module (deploy/package.sh, the script behind `make package`). The SAM
template is linted as written, then expanded by the SAM translator (what CloudFormation's
AWS::Serverless transform does) and the expanded template is linted and inspected, so the
assertions are about the resources AWS would create, not about how the template spells them.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parent.parent
QUEUE_ACTIONS = {
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
LOG_ACTIONS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
SECRET_ACTIONS = {"secretsmanager:GetSecretValue", "ssm:GetParameter"}
ALLOWED_ACTIONS = (QUEUE_ACTIONS | ENI_ACTIONS | LOG_ACTIONS | SECRET_ACTIONS
                   | {"execute-api:ManageConnections"})
# The SAM stack creates each function's log group (LoggingConfig), so its functions need not create one.
SAM_ACTIONS = ALLOWED_ACTIONS - {"logs:CreateLogGroup"}
QUEUES = ("DispatchQueue", "FanoutQueue")
# The variables that name where each secret is kept (chalicelib/aws_secrets.py); never the values.
SECRET_VARIABLES = ("API_TOKEN_SECRET_ARN", "WEBHOOK_SECRET_ARN", "REDIS_AUTH_SECRET_ARN")
PLAIN_SECRETS = ("API_TOKEN", "WEBHOOK_SECRET")
REDIS_ENDPOINT = "rediss://${Cache.Endpoint.Address}:${Cache.Endpoint.Port}"
API_TOKEN_SECRET = {"Fn::If": ["UseApiTokenSecretArn", {"Ref": "ApiTokenSecretArn"},
                               {"Ref": "ApiTokenSecret"}]}
FUNCTION_NAMES = ("APIHandler", "Tick", "Dispatch", "Fanout", "WebsocketConnect", "WebsocketMessage",
                  "WebsocketDisconnect")


@dataclass(frozen=True)
class Packaged:
    sam_path: Path
    sam: dict[str, Any]
    cfn: dict[str, Any]  # after the SAM transform
    terraform_dir: Path


class _NoManagedPolicyLookups(ManagedPolicyLoader):
    """The template names no AWS managed policy by name, so the translator must not call IAM."""

    def __init__(self) -> None:
        pass

    def load(self) -> dict[str, str]:
        raise AssertionError("the SAM template asks for an AWS managed policy by name")


def _expand_sam(sam: dict[str, Any]) -> dict[str, Any]:
    template = json.loads(json.dumps(sam))
    # `aws cloudformation package` uploads ./deployment.zip and writes its S3 address here.
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://punctual-artifacts/deployment.zip"
    return transform(template, {}, _NoManagedPolicyLookups())


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run(["bash", str(ROOT / "deploy" / "package.sh"), str(out), "prod"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    sam_path = out / "sam" / "sam.json"
    sam = json.loads(sam_path.read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the translator resolves AWS::Region
        cfn = _expand_sam(sam)
    yield Packaged(sam_path, sam, cfn, out / "terraform")


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _functions(p: Packaged) -> dict[str, dict[str, Any]]:
    return _of_type(p.cfn, "AWS::Lambda::Function")


def _sub_text(value: Any) -> str:
    """The text of a Fn::Sub, or '' when the value is something else."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return ""


def _is_queue_arn(value: Any, queue: str) -> bool:
    return value == {"Fn::GetAtt": [queue, "Arn"]} or _sub_text(value) == f"${{{queue}.Arn}}"


def _resources(statement: dict[str, Any]) -> list[Any]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def _role_statements(p: Packaged, function: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement the function's role grants: inline and attached managed policies."""
    role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
    role = p.cfn["Resources"][role_name]["Properties"]
    documents = [policy["PolicyDocument"] for policy in role.get("Policies", [])]
    for arn in role.get("ManagedPolicyArns", []):
        # Only policies declared in this template: an AWS managed one would grant more than the code calls.
        assert isinstance(arn, dict) and "Ref" in arn, f"{role_name} attaches {arn}"
        documents.append(p.cfn["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    return [statement for document in documents for statement in document["Statement"]]


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_the_sam_template_passes_cfn_lint(packaged: Packaged) -> None:
    assert [str(m) for m in lint(packaged.sam_path.read_text())] == []


def test_the_expanded_template_passes_cfn_lint_with_no_dependency_cycle(packaged: Packaged) -> None:
    # Linting after the transform also checks what SAM generated, e.g. E3004 (circular dependencies).
    assert [str(m) for m in lint(json.dumps(packaged.cfn))] == []


def test_rest_api_and_websocket_api_are_declared(packaged: Packaged) -> None:
    assert _of_type(packaged.cfn, "AWS::ApiGateway::RestApi")
    apis = _of_type(packaged.cfn, "AWS::ApiGatewayV2::Api")
    assert [a["Properties"]["ProtocolType"] for a in apis.values()] == ["WEBSOCKET"]
    routes = _of_type(packaged.cfn, "AWS::ApiGatewayV2::Route").values()
    assert {r["Properties"]["RouteKey"] for r in routes} == {"$connect", "$default", "$disconnect"}


def test_the_tick_runs_every_minute(packaged: Packaged) -> None:
    rules = _of_type(packaged.cfn, "AWS::Events::Rule").values()
    targets = [
        (rule["Properties"]["ScheduleExpression"], target["Arn"])
        for rule in rules for target in rule["Properties"]["Targets"]
    ]
    assert targets == [("rate(1 minute)", {"Fn::GetAtt": ["Tick", "Arn"]})]


def test_the_dispatch_queue_has_a_dead_letter_queue(packaged: Packaged) -> None:
    queues = _of_type(packaged.cfn, "AWS::SQS::Queue")
    assert set(queues) == {"DispatchQueue", "DispatchDeadLetterQueue", "FanoutQueue"}
    props = queues["DispatchQueue"]["Properties"]
    redrive = props["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DispatchDeadLetterQueue", "Arn"]}
    assert 1 <= int(redrive["maxReceiveCount"]) <= 10
    # Lambda refuses an SQS event source whose visibility timeout is below the function's timeout.
    assert props["VisibilityTimeout"] >= _functions(packaged)["Dispatch"]["Properties"]["Timeout"]


def test_the_fanout_queue_keeps_chunks_briefly_and_has_no_dead_letter_queue(packaged: Packaged) -> None:
    props = _of_type(packaged.cfn, "AWS::SQS::Queue")["FanoutQueue"]["Properties"]
    # Events are best-effort: a chunk of a fan-out older than 5 minutes is worthless.
    assert props["MessageRetentionPeriod"] == 300
    assert "RedrivePolicy" not in props
    assert props["VisibilityTimeout"] >= _functions(packaged)["Fanout"]["Properties"]["Timeout"]


def test_the_dispatch_and_fanout_functions_consume_their_queues(packaged: Packaged) -> None:
    mappings = [m["Properties"] for m in _of_type(packaged.cfn, "AWS::Lambda::EventSourceMapping").values()]
    by_function = {props["FunctionName"]["Ref"]: props for props in mappings}
    assert len(mappings) == 2 and set(by_function) == {"Dispatch", "Fanout"}
    for function, queue, batch_size in (("Dispatch", "DispatchQueue", 10), ("Fanout", "FanoutQueue", 1)):
        props = by_function[function]
        assert _is_queue_arn(props["EventSourceArn"], queue), props["EventSourceArn"]
        assert props["BatchSize"] == batch_size, function


def test_functions_get_the_queue_and_websocket_endpoint_from_the_template(packaged: Packaged) -> None:
    ws_stage = next(iter(_of_type(packaged.cfn, "AWS::ApiGatewayV2::Stage").values()))["Properties"]
    rest_stage = next(iter(_of_type(packaged.cfn, "AWS::ApiGateway::Stage").values()))["Properties"]
    functions = _functions(packaged)
    assert set(functions) == {"APIHandler", "Tick", "Dispatch", "Fanout", "WebsocketConnect",
                              "WebsocketMessage", "WebsocketDisconnect"}
    for name, function in functions.items():
        env = function["Properties"]["Environment"]["Variables"]
        assert env["DISPATCH_QUEUE_URL"] == {"Ref": "DispatchQueue"}, name
        assert env["DISPATCH_QUEUE_NAME"] == {"Fn::GetAtt": ["DispatchQueue", "QueueName"]}, name
        assert env["FANOUT_QUEUE_URL"] == {"Ref": "FanoutQueue"}, name
        assert env["FANOUT_QUEUE_NAME"] == {"Fn::GetAtt": ["FanoutQueue", "QueueName"]}, name
        endpoint = _sub_text(env["WS_MANAGEMENT_ENDPOINT"])
        assert endpoint.startswith("https://${WebsocketAPI}.execute-api."), name
        assert endpoint.endswith("/" + ws_stage["StageName"]), name
        # Secrets are read at start from where these name, never held in the environment.
        assert not set(PLAIN_SECRETS) & set(env), name
        assert env["API_TOKEN_SECRET_ARN"] == API_TOKEN_SECRET, name
        assert env["REDIS_AUTH_SECRET_ARN"] == {"Ref": "RedisAuthSecretArn"}, name
        # The cache the stack creates (TLS, as ElastiCache Serverless requires), or the Redis brought.
        brought = {"Ref": "RedisUrl"}
        assert env["REDIS_URL"] == {"Fn::If": ["CreateCache", {"Fn::Sub": REDIS_ENDPOINT}, brought]}, name
    for name in ("Tick", "Dispatch"):  # they call agents, which report to callbackUrl
        callback = _sub_text(functions[name]["Properties"]["Environment"]["Variables"]["PUBLIC_API_URL"])
        assert callback.startswith("https://${RestAPI}.execute-api."), name
        assert callback.endswith("/" + rest_stage["StageName"]), name
    assert packaged.cfn["Parameters"]["ApiToken"]["NoEcho"] is True
    assert packaged.cfn["Parameters"]["WebhookSecret"]["NoEcho"] is True


def test_an_elasticache_serverless_valkey_cache_is_created_unless_a_redis_url_is_given(
    packaged: Packaged,
) -> None:
    cfn = packaged.cfn
    assert cfn["Conditions"]["CreateCache"] == {"Fn::Equals": [{"Ref": "RedisUrl"}, ""]}
    assert cfn["Parameters"]["RedisUrl"]["Default"] == "" and cfn["Parameters"]["RedisUrl"]["NoEcho"]
    [cache] = _of_type(cfn, "AWS::ElastiCache::ServerlessCache").values()
    assert cache["Condition"] == "CreateCache"
    props = cache["Properties"]
    assert props["Engine"] == "valkey"
    assert props["SubnetIds"] == {"Ref": "CacheSubnetIds"}
    assert props["SecurityGroupIds"] == [{"Ref": "CacheSecurityGroup"}]
    group = cfn["Resources"]["CacheSecurityGroup"]
    assert group["Condition"] == "CreateCache"
    [rule] = group["Properties"]["SecurityGroupIngress"]
    assert (rule["FromPort"], rule["ToPort"]) == (6379, 6380)
    assert rule["SourceSecurityGroupId"] == {"Ref": "FunctionSecurityGroupId"}
    assert cfn["Outputs"]["RedisUrl"]["Value"] == {"Fn::Sub": REDIS_ENDPOINT}


def test_functions_run_in_the_vpc_that_reaches_elasticache(packaged: Packaged) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["prod"]
    for name, function in _functions(packaged).items():
        vpc = function["Properties"]["VpcConfig"]
        assert vpc["SubnetIds"] == config["subnet_ids"], name
        assert vpc["SecurityGroupIds"] == config["security_group_ids"], name
        assert ENI_ACTIONS <= set().union(*map(_actions, _role_statements(packaged, function))), name


def _arn_positions(arn: str) -> tuple[str, str, str, str]:
    """(partition, region, account, resource) of an ARN's text."""
    parts = arn.split(":", 5)
    assert parts[0] == "arn" and len(parts) == 6, arn
    return parts[1], parts[3], parts[4], parts[5]


def assert_pinned(arn: str) -> None:
    """No wildcard where the account, the region or (execute-api) the API id goes."""
    partition, region, account, resource = _arn_positions(arn)
    assert "*" not in partition + region + account, arn
    assert region and account, arn
    if ":execute-api:" in arn:
        api_id, stage, *_ = resource.split("/")
        assert "*" not in api_id + stage, arn


def test_iam_grants_only_what_the_code_calls_on_its_own_resources(packaged: Packaged) -> None:
    functions = _functions(packaged)
    for name, function in functions.items():
        statements = _role_statements(packaged, function)
        granted = set().union(*map(_actions, statements))
        assert granted == SAM_ACTIONS, name
        queues_granted: set[str] = set()
        for statement in statements:
            actions = _actions(statement)
            resource = statement["Resource"]
            if actions & QUEUE_ACTIONS:
                assert actions == QUEUE_ACTIONS, statement  # each queue is sent to and consumed
                for arn in _resources(statement):
                    queue = next((q for q in QUEUES if _is_queue_arn(arn, q)), None)
                    assert queue is not None, statement
                    queues_granted.add(queue)
            elif actions == {"execute-api:ManageConnections"}:
                # This stack's WebSocket API and stage, in this account and region.
                assert _sub_text(resource) == (
                    "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebsocketAPI}"
                    "/api/POST/@connections/*"), statement
            elif actions <= LOG_ACTIONS:
                # Only the log groups of this stack's own functions, each named in its LoggingConfig.
                groups = {f"{n}Logs" for n in FUNCTION_NAMES}
                assert sorted(r["Fn::GetAtt"][0] for r in _resources(statement)) == sorted(groups), statement
            elif actions == SECRET_ACTIONS:
                assert _resources(statement)[0] == API_TOKEN_SECRET, statement
                assert "*" not in json.dumps(resource), statement
            else:
                # Network interfaces cannot be scoped before they exist.
                assert actions <= ENI_ACTIONS, statement
        assert queues_granted == set(QUEUES), name
    for name, function in functions.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]
        assert group == {"Ref": f"{name}Logs"}, name
        log_group = packaged.cfn["Resources"][group["Ref"]]
        assert log_group["Type"] == "AWS::Logs::LogGroup"
        assert _sub_text(log_group["Properties"]["LogGroupName"]) == f"/aws/lambda/${{AWS::StackName}}-{name}"
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_api_token_is_kept_in_a_secret_the_stack_creates_or_is_given(packaged: Packaged) -> None:
    cfn = packaged.cfn
    secret = cfn["Resources"]["ApiTokenSecret"]
    assert secret["Condition"] == "CreateApiTokenSecret"
    props = secret["Properties"]
    # The given token, or a generated one: never a stack without a token.
    given = {"Fn::If": ["ApiTokenGiven", {"Ref": "ApiToken"}, {"Ref": "AWS::NoValue"}]}
    assert props["SecretString"] == given
    generated = props["GenerateSecretString"]["Fn::If"][2]
    assert generated["PasswordLength"] >= 32 and generated["ExcludePunctuation"] is True
    assert cfn["Parameters"]["ApiToken"]["AllowedPattern"] == "^(|.{16,})$"
    assert cfn["Outputs"]["ApiTokenSecretArn"]["Value"] == API_TOKEN_SECRET
    webhook = cfn["Resources"]["WebhookSigningSecret"]
    assert webhook["Condition"] == "CreateWebhookSecret"
    assert webhook["Properties"]["SecretString"] == {"Ref": "WebhookSecret"}


def test_floods_are_throttled_and_the_engine_keeps_its_concurrency(packaged: Packaged) -> None:
    cfn = packaged.cfn
    [rest_stage] = _of_type(cfn, "AWS::ApiGateway::Stage").values()
    assert rest_stage["Properties"]["MethodSettings"] == [{
        "HttpMethod": "*", "ResourcePath": "/*",
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"}}]
    [ws_stage] = _of_type(cfn, "AWS::ApiGatewayV2::Stage").values()
    assert ws_stage["Properties"]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "WebsocketThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "WebsocketThrottlingBurstLimit"}}
    functions = _functions(packaged)
    for function, parameter, condition in (("Tick", "TickReservedConcurrency", "ReserveTick"),
                                           ("Dispatch", "DispatchReservedConcurrency", "ReserveDispatch"),
                                           ("APIHandler", "ApiReservedConcurrency", "CapApi")):
        reserved = functions[function]["Properties"]["ReservedConcurrentExecutions"]
        assert reserved == {"Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}, function
        assert cfn["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
        assert cfn["Parameters"][parameter]["Default"] > 0, parameter
    # The dispatch queue's poller never runs more than the reservation: a throttled SQS batch
    # counts as a receive and would reach the dead-letter queue.
    mappings = _of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
    [dispatch] = [m["Properties"] for m in mappings if m["Properties"]["FunctionName"] == {"Ref": "Dispatch"}]
    most = {"MaximumConcurrency": {"Ref": "DispatchReservedConcurrency"}}
    assert dispatch["ScalingConfig"] == {"Fn::If": ["ReserveDispatch", most, {"Ref": "AWS::NoValue"}]}
    assert cfn["Parameters"]["DispatchReservedConcurrency"]["Default"] >= 2


def test_redis_is_set_never_to_evict(packaged: Packaged) -> None:
    cfn = packaged.cfn
    [group] = _of_type(cfn, "AWS::ElastiCache::ParameterGroup").values()
    assert group["Properties"]["Properties"] == {"maxmemory-policy": "noeviction"}
    # ElastiCache Serverless has no policy to set; it evicts only under a data storage maximum.
    [cache] = _of_type(cfn, "AWS::ElastiCache::ServerlessCache").values()
    assert "CacheUsageLimits" not in cache["Properties"]


def test_chalice_deploy_policy_is_pinned_to_the_account_region_and_api() -> None:
    # `chalice deploy --stage prod` uses .chalice/policy-prod.json (Terraform replaces it).
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["prod"]
    assert config["autogen_policy"] is False
    policy = json.loads((ROOT / ".chalice" / config["iam_policy_file"]).read_text())
    assert set().union(*map(_actions, policy["Statement"])) == ALLOWED_ACTIONS
    queue_statements = [s for s in policy["Statement"] if _actions(s) & QUEUE_ACTIONS]
    assert all(_actions(s) == QUEUE_ACTIONS for s in queue_statements)
    arns = [r for s in policy["Statement"] if not _actions(s) <= ENI_ACTIONS for r in _resources(s)]
    for arn in arns:
        assert_pinned(arn)
    # One account and one region throughout, so that the README's one substitution pins them all.
    assert len({_arn_positions(a)[1:3] for a in arns}) == 1
    queue_names = {_arn_positions(r)[3] for s in queue_statements for r in _resources(s)}
    assert queue_names == {"punctual-dispatch", "punctual-fanout"}
    [logs] = [s for s in policy["Statement"] if _actions(s) == LOG_ACTIONS]
    functions = ["punctual-prod"] + [f"punctual-prod-{n}" for n in (
        "tick", "dispatch", "fanout", "websocket_connect", "websocket_message", "websocket_disconnect")]
    assert [_arn_positions(r)[3] for r in _resources(logs)] == [
        f"log-group:/aws/lambda/{f}:*" for f in functions]
    # Its functions' reserved concurrency, as the templates' defaults.
    reserved = {name: c["reserved_concurrency"] for name, c in config["lambda_functions"].items()}
    assert reserved == {"tick": 2, "dispatch": 50, "api_handler": 100}


def test_terraform_policy_is_pinned_and_replaces_chalices(packaged: Packaged) -> None:
    chalice_tf = json.loads((packaged.terraform_dir / "chalice.tf.json").read_text())["resource"]
    ours_tf = json.loads((packaged.terraform_dir / "punctual.tf.json").read_text())
    override = json.loads((packaged.terraform_dir / "punctual_override.tf.json").read_text())["resource"]
    document = "${data.aws_iam_policy_document.punctual.json}"
    assert {name: p["policy"] for name, p in override["aws_iam_role_policy"].items()} == {
        name: document for name in chalice_tf["aws_iam_role_policy"]}
    statements = ours_tf["data"]["aws_iam_policy_document"]["punctual"]["statement"]
    assert set().union(*(set(s["actions"]) for s in statements)) == ALLOWED_ACTIONS
    for statement in statements:
        actions, resources = set(statement["actions"]), statement["resources"]
        if actions <= ENI_ACTIONS:
            continue
        if actions == SECRET_ACTIONS:
            assert "aws_secretsmanager_secret.api_token.arn" in resources, statement
            continue
        assert isinstance(resources, list)
        for arn in resources:
            if arn.startswith("${aws_sqs_queue."):
                continue  # this stack's queues
            assert_pinned(arn)
            assert "${data.aws_caller_identity.chalice.account_id}" in arn, arn
        if actions == {"execute-api:ManageConnections"}:
            assert resources == ["arn:${data.aws_partition.chalice.partition}:execute-api:"
                                 "${data.aws_region.chalice.name}:${data.aws_caller_identity.chalice.account_id}:"
                                 "${aws_apigatewayv2_api.websocket_api.id}/api/POST/@connections/*"]


def test_terraform_keeps_secrets_out_of_the_environment_and_sets_the_limits(packaged: Packaged) -> None:
    ours_tf = json.loads((packaged.terraform_dir / "punctual.tf.json").read_text())
    override = json.loads((packaged.terraform_dir / "punctual_override.tf.json").read_text())
    variables = ours_tf["variable"]
    assert variables["api_token"]["sensitive"] is True
    assert variables["api_token"]["validation"]["condition"] == "${length(var.api_token) >= 16}"
    environment = ours_tf["locals"]["punctual_environment"]
    assert not set(PLAIN_SECRETS) & set(environment)
    assert set(SECRET_VARIABLES) <= set(environment)
    assert environment["API_TOKEN_SECRET_ARN"] == "${aws_secretsmanager_secret.api_token.arn}"
    resources = ours_tf["resource"]
    assert resources["aws_secretsmanager_secret_version"]["api_token"]["secret_string"] == "${var.api_token}"
    [parameter] = resources["aws_elasticache_parameter_group"]["noeviction"]["parameter"]
    assert parameter == {"name": "maxmemory-policy", "value": "noeviction"}
    throttled = resources["aws_api_gateway_method_settings"]["rest_api"]
    assert throttled["settings"] == {"throttling_rate_limit": "${var.api_throttling_rate_limit}",
                                     "throttling_burst_limit": "${var.api_throttling_burst_limit}"}
    ws = override["resource"]["aws_apigatewayv2_stage"]["websocket_api_stage"]["default_route_settings"]
    assert set(ws) == {"throttling_rate_limit", "throttling_burst_limit"}
    functions = override["resource"]["aws_lambda_function"]
    for name, variable in (("tick", "tick"), ("dispatch", "dispatch"), ("api_handler", "api")):
        assert functions[name]["reserved_concurrent_executions"] == (
            f"${{var.{variable}_reserved_concurrency == 0 ? -1 : var.{variable}_reserved_concurrency}}")
    scaling = override["resource"]["aws_lambda_event_source_mapping"]["dispatch-sqs-event-source"]["dynamic"]
    assert scaling["scaling_config"]["content"] == {"maximum_concurrency": "${scaling_config.value}"}
    # maximum_concurrency came in the AWS provider 4.53; Chalice's output needs < 5.
    assert override["terraform"]["required_providers"]["aws"]["version"] == ">= 4.53.0, < 5"


def test_terraform_stack_declares_the_queues_and_wires_them(packaged: Packaged) -> None:
    chalice_tf = json.loads((packaged.terraform_dir / "chalice.tf.json").read_text())["resource"]
    ours_tf = json.loads((packaged.terraform_dir / "punctual.tf.json").read_text())
    ours = ours_tf["resource"]
    override = json.loads((packaged.terraform_dir / "punctual_override.tf.json").read_text())["resource"]
    rules = chalice_tf["aws_cloudwatch_event_rule"].values()
    assert [r["schedule_expression"] for r in rules] == ["rate(1 minute)"]
    assert "websocket_api" in chalice_tf["aws_apigatewayv2_api"]
    queues = ours["aws_sqs_queue"]
    assert "aws_sqs_queue.dispatch_dlq.arn" in queues["dispatch"]["redrive_policy"]
    assert queues["fanout"]["name"] == "punctual-fanout"
    assert queues["fanout"]["message_retention_seconds"] == 300
    assert "redrive_policy" not in queues["fanout"]
    timeout = chalice_tf["aws_lambda_function"]["fanout"]["timeout"]
    assert queues["fanout"]["visibility_timeout_seconds"] >= timeout
    environment = ours_tf["locals"]["punctual_environment"]
    assert environment["DISPATCH_QUEUE_URL"] == "${aws_sqs_queue.dispatch.url}"
    assert environment["FANOUT_QUEUE_URL"] == "${aws_sqs_queue.fanout.url}"
    assert environment["FANOUT_QUEUE_NAME"] == "${aws_sqs_queue.fanout.name}"
    # An override of a resource Chalice does not generate would fail `terraform plan`; check the names.
    for kind, resources in override.items():
        assert set(resources) <= set(chalice_tf[kind]), kind
    mapping = override["aws_lambda_event_source_mapping"]
    # Each mapping waits for its role's policy (Lambda checks the role may receive from the queue);
    # depends_on cannot be overridden, so the queue's ARN is read through the policy's id.
    assert {name: m["event_source_arn"] for name, m in mapping.items()} == {
        "dispatch-sqs-event-source":
            "${element([aws_sqs_queue.dispatch.arn, aws_iam_role_policy.dispatch_role.id], 0)}",
        "fanout-sqs-event-source":
            "${element([aws_sqs_queue.fanout.arn, aws_iam_role_policy.fanout_role.id], 0)}",
    }
    for kind, resources in override.items():
        for resource in resources.values():
            assert "depends_on" not in resource, kind  # Terraform refuses to override it
    # The function each mapping feeds, and its batch size, come from Chalice (app.py).
    fed = {name: (m["function_name"], m["batch_size"])
           for name, m in chalice_tf["aws_lambda_event_source_mapping"].items()}
    assert fed == {
        "dispatch-sqs-event-source": ("${aws_lambda_function.dispatch.arn}", 10),
        "fanout-sqs-event-source": ("${aws_lambda_function.fanout.arn}", 1),
    }
    assert set(override["aws_lambda_function"]) == set(chalice_tf["aws_lambda_function"])


def test_the_lambda_package_holds_the_files_the_code_reads(packaged: Packaged) -> None:
    # Served from chalicelib/ at run time: the OpenAPI document and the dashboard's page.
    with zipfile.ZipFile(packaged.sam_path.parent / "deployment.zip") as package:
        names = set(package.namelist())
    needed = {"chalicelib/openapi.json", "chalicelib/dashboard/index.html", "chalicelib/dashboard/app.js",
              "chalicelib/dashboard/style.css"}
    assert needed <= names
    assert not any(name.startswith(("emulator/", "tests/")) for name in names)
