"""Patches for moto's known gaps, applied only inside the deploy rehearsal's own moto server process.

The rehearsal (`devstack/rehearsal.py`) runs moto in-process (`ThreadedMotoServer`) and calls
`apply()` first, so these never touch the local stack's or the tests' moto. Each patch makes moto do
what AWS does for a template or call this project really sends; none relaxes a check AWS makes.
`PATCHES` lists them with their reason (copied into `build/<stage>/rehearsal.json`).
"""

from __future__ import annotations

import json
from typing import Any

PATCHES: dict[str, str] = {
    "apigateway.RestApi.cloudformation_name": (
        "SAM's expanded AWS::ApiGateway::RestApi has a swagger Body and no Name; moto reads Properties['Name'] "
        "(KeyError). AWS takes the name from the body's info.title: so does the patch."),
    "apigateway.RestApi.cloudformation_body": (
        "moto ignores the Body of a CloudFormation RestApi, so the API has no methods and the SAM Deployment fails "
        "(NoMethodDefined). The patch imports the body's paths, methods and integrations like ImportRestApi."),
    "apigateway.put_rest_api.swagger2": (
        "moto imports OpenAPI 3 documents only and rejects Swagger 2.0, which Chalice and SAM write and AWS "
        "imports; the structure moto reads (paths, methods, x-amazon-apigateway-integration) is the same."),
    "apigateway.import_rest_api.description": (
        "moto's ImportRestApi requires info.description (KeyError 'description'), which `chalice deploy`'s "
        "swagger does not have and AWS does not require."),
    "kms.Key.cloudformation_policy": (
        "CloudFormation gives KeyPolicy as a JSON object; moto stores it unserialised and later KMS calls on the "
        "key fail (TypeError). AWS stores the document: the patch serialises it."),
    "apigatewayv2.create_deployment": (
        "moto has no apigatewayv2 deployments route (404 page), so `chalice deploy` stops after creating the "
        "WebSocket API. AWS answers CreateDeployment with a deployment id that CreateStage then names: the patch "
        "adds the route and answers likewise (a deployed status, nothing else stored)."),
}

_applied = False


def apply() -> dict[str, str]:
    """Install every patch (idempotent); returns PATCHES."""
    global _applied
    if _applied:
        return PATCHES
    from moto.apigateway import models as apigw
    from moto.kms import models as kms

    backend_class = apigw.APIGatewayBackend
    original_put = backend_class.put_rest_api
    original_import = backend_class.import_rest_api

    def put_rest_api(self: Any, function_id: str, api_doc: dict[str, Any], fail_on_warnings: bool,
                     mode: str = "merge") -> Any:
        if api_doc.get("swagger") is not None:
            api_doc = {k: v for k, v in api_doc.items() if k != "swagger"} | {"openapi": "3.0.1"}
        return original_put(self, function_id, api_doc, fail_on_warnings, mode)

    def import_rest_api(self: Any, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
        info = dict(api_doc.get("info") or {})
        info.setdefault("title", "imported")
        info.setdefault("description", "")
        return original_import(self, api_doc | {"info": info}, fail_on_warnings)

    backend_class.put_rest_api = put_rest_api
    backend_class.import_rest_api = import_rest_api

    def rest_api_from_cfn(cls: Any, resource_name: str, cloudformation_json: dict[str, Any], account_id: str,
                          region_name: str, **kwargs: Any) -> Any:
        properties = cloudformation_json["Properties"]
        body = properties.get("Body")
        name = properties.get("Name") or (body or {}).get("info", {}).get("title") or resource_name
        backend = apigw.apigateway_backends[account_id][region_name]
        api = backend.create_rest_api(name=name, description=properties.get("Description", ""),
                                      endpoint_configuration=properties.get("EndpointConfiguration"))
        if body:
            backend.put_rest_api(api.id, body, fail_on_warnings=False)
        return api

    apigw.RestAPI.create_from_cloudformation_json = classmethod(rest_api_from_cfn)  # type: ignore[assignment]

    original_key = kms.Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def key_from_cfn(cls: Any, resource_name: str, cloudformation_json: dict[str, Any], account_id: str,
                     region_name: str, **kwargs: Any) -> Any:
        properties = cloudformation_json["Properties"]
        if isinstance(properties.get("KeyPolicy"), dict):
            cloudformation_json = cloudformation_json | {
                "Properties": properties | {"KeyPolicy": json.dumps(properties["KeyPolicy"])}}
        return original_key(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    kms.Key.create_from_cloudformation_json = classmethod(key_from_cfn)  # type: ignore[assignment]
    _add_websocket_deployments()
    _applied = True
    return PATCHES


def _add_websocket_deployments() -> None:
    """CreateDeployment for apigatewayv2 (see PATCHES); the server's URL map is built from `url_paths`
    when it starts, so this runs before `ThreadedMotoServer` is created."""
    import uuid

    from moto.apigatewayv2 import responses, urls

    def create_deployment(self: Any) -> Any:
        api_id = self.path.split("/")[-2]
        self.apigatewayv2_backend.get_api(api_id)  # NotFound for an unknown API, as AWS answers
        body = json.loads(self.body or "{}")
        deployment = {"deploymentId": uuid.uuid4().hex[:6], "deploymentStatus": "DEPLOYED",
                      "autoDeployed": False, "description": body.get("description", "")}
        return 201, {}, json.dumps(deployment)

    responses.ApiGatewayV2Response.create_deployment = create_deployment  # type: ignore[attr-defined]
    urls.url_paths["{0}/v2/apis/(?P<api_id>[^/]+)/deployments$"] = responses.ApiGatewayV2Response.dispatch
