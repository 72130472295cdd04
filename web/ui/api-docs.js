// The interactive API page: Swagger UI (vendored, web/ui/vendor/swagger-ui) on this worker's own OpenAPI
// document. "Authorize" takes a bearer token (python -m pipeline dev-token); "Try it out" calls this worker.
"use strict";

window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // no call to the public validator service: the page talks to this worker only
    validatorUrl: null,
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
