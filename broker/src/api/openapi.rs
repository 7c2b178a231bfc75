//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of the partner API.

use axum::Json;
use serde_json::{Value, json};

/// The OpenAPI 3.1 document.
pub async fn document() -> Json<Value> {
    Json(spec())
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// The document itself (also used by tests).
#[must_use]
pub fn spec() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "snodo hub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The cooperation hub of a federation of public bodies. Every call is made over TLS 1.3 with a client certificate issued by the federation CA; its SAN URI (urn:snodo:entity:<class>:<code>) names the caller."
        },
        "servers": [{ "url": "https://localhost:8443" }],
        "paths": {
            "/v1/envelopes": {
                "post": {
                    "operationId": "submitEnvelope",
                    "summary": "Submit a signed envelope",
                    "description": "The acceptance pipeline: size and syntax, signature and certificate chain, transport identity equals signed sender, access rights, duplicate id, durable write to journal and queue, signed receipt. A duplicate id from the same sender returns the original receipt (200) and delivers nothing new.",
                    "parameters": [{
                        "name": "wait", "in": "query", "required": false,
                        "description": "For a request envelope: wait this long (e.g. 5s, capped by the hub) for the response and return it.",
                        "schema": { "type": "string", "examples": ["5s"] }
                    }],
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/xml": { "schema": { "type": "string", "description": "An XML envelope with an enveloped XML-DSig signature." } },
                            "application/jose+json": { "schema": { "$ref": "#/components/schemas/FlattenedJws" } }
                        }
                    },
                    "responses": {
                        "202": { "description": "Accepted: the receipt.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Receipt" } } } },
                        "200": {
                            "description": "A duplicate: the original receipt; or, with wait, the response envelope (its receipt in the snodo-receipt header, base64url JSON).",
                            "content": {
                                "application/json": { "schema": { "$ref": "#/components/schemas/Receipt" } },
                                "application/xml": { "schema": { "type": "string" } },
                                "application/jose+json": { "schema": { "$ref": "#/components/schemas/FlattenedJws" } }
                            }
                        },
                        "400": problem("The envelope is malformed, not signed as required, or its header breaks a rule."),
                        "403": problem("Not allowed: signer is not the caller, the certificate is revoked or untrusted, or the registry forbids this exchange."),
                        "409": problem("The envelope id was already used by this sender for different content."),
                        "413": problem("The envelope is larger than the hub accepts."),
                        "415": problem("Content-Type is not application/xml or application/jose+json, or does not match the body."),
                        "422": problem("Unknown recipient, service or action, profile not allowed, or the envelope has expired."),
                        "429": problem("The caller exceeds its request rate or bytes in flight; see Retry-After."),
                        "503": problem("The hub cannot accept now; see Retry-After.")
                    }
                }
            },
            "/v1/envelopes/{id}": {
                "get": {
                    "operationId": "getEnvelope",
                    "summary": "State and history of an envelope (its sender and recipients only)",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }],
                    "responses": {
                        "200": { "description": "The envelope's record and its journal entries.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/EnvelopeStatus" } } } },
                        "404": problem("No such envelope that the caller sent or received.")
                    }
                }
            },
            "/v1/inbox": {
                "get": {
                    "operationId": "leaseInbox",
                    "summary": "Lease the caller's next envelopes",
                    "parameters": [
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "default": 10 } },
                        { "name": "lease", "in": "query", "description": "Lease duration, e.g. 30s.", "schema": { "type": "string" } }
                    ],
                    "responses": {
                        "200": { "description": "The envelopes, each with its lease.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Inbox" } } } },
                        "429": problem("Rate limited.")
                    }
                }
            },
            "/v1/inbox/ack": {
                "post": {
                    "operationId": "ackEnvelope",
                    "summary": "Acknowledge a leased envelope: delivered, never handed out again",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Settle" } } } },
                    "responses": { "204": { "description": "Acknowledged." }, "404": problem("No such lease held by the caller (it may have expired).") }
                }
            },
            "/v1/inbox/nack": {
                "post": {
                    "operationId": "nackEnvelope",
                    "summary": "Return a leased envelope to the inbox",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Settle" } } } },
                    "responses": { "204": { "description": "Returned." }, "404": problem("No such lease held by the caller.") }
                }
            },
            "/v1/admin/reload": {
                "post": {
                    "operationId": "reloadConfig",
                    "summary": "Reload the configuration file (the hub's own certificate only)",
                    "responses": { "200": { "description": "Reloaded." }, "403": problem("Not the hub."), "422": problem("The new configuration is refused; the old one stays.") }
                }
            },
            "/healthz": { "get": { "operationId": "health", "summary": "The process answers", "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "operationId": "ready", "summary": "Store writable, keys loaded, certificates not near expiry", "responses": { "200": { "description": "ready" }, "503": { "description": "not ready, with the reasons" } } } },
            "/metrics": { "get": { "operationId": "metrics", "summary": "Prometheus metrics", "responses": { "200": { "description": "OpenMetrics text" } } } },
            "/v1/openapi.json": { "get": { "operationId": "openapi", "summary": "This document", "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        },
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details with a stable code.",
                    "required": ["type", "title", "status", "code", "detail"],
                    "properties": {
                        "type": { "type": "string", "examples": ["urn:snodo:problem:signature-invalid"] },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "code": { "type": "string" },
                        "detail": { "type": "string" }
                    }
                },
                "FlattenedJws": {
                    "type": "object",
                    "required": ["protected", "payload", "signature"],
                    "additionalProperties": false,
                    "properties": { "protected": { "type": "string" }, "payload": { "type": "string" }, "signature": { "type": "string" } }
                },
                "Receipt": {
                    "type": "object",
                    "description": "Evidence of acceptance: the accepted journal entry, its inclusion proof and the signed checkpoint it is included under.",
                    "required": ["envelope_id", "sender", "digest", "index", "accepted_at", "entry", "inclusion_proof", "checkpoint"],
                    "properties": {
                        "envelope_id": { "type": "string", "format": "uuid" },
                        "sender": { "type": "string" },
                        "digest": { "type": "string", "description": "SHA-256 of the exact bytes received, hex." },
                        "index": { "type": "integer", "description": "Journal index of the accepted entry." },
                        "accepted_at": { "type": "string", "format": "date-time" },
                        "entry": { "type": "string", "description": "The accepted entry's canonical bytes, base64." },
                        "inclusion_proof": { "type": "array", "items": { "type": "string" } },
                        "checkpoint": { "type": "object", "description": "The signed checkpoint (tree size, root, time, hub signature)." }
                    }
                },
                "Leased": {
                    "type": "object",
                    "required": ["lease", "lease_expires_at", "envelope_id", "sender", "media_type", "envelope"],
                    "properties": {
                        "lease": { "type": "string" },
                        "lease_expires_at": { "type": "string", "format": "date-time" },
                        "envelope_id": { "type": "string", "format": "uuid" },
                        "sender": { "type": "string" },
                        "media_type": { "type": "string", "enum": ["application/xml", "application/jose+json"] },
                        "envelope": { "type": "string", "description": "The exact signed bytes the sender submitted." }
                    }
                },
                "Inbox": { "type": "object", "required": ["envelopes"], "properties": { "envelopes": { "type": "array", "items": { "$ref": "#/components/schemas/Leased" } } } },
                "Settle": { "type": "object", "required": ["lease"], "additionalProperties": false, "properties": { "lease": { "type": "string" } } },
                "EnvelopeStatus": {
                    "type": "object",
                    "required": ["envelope", "history"],
                    "properties": { "envelope": { "type": "object" }, "history": { "type": "array", "items": { "type": "object" } } }
                }
            }
        }
    })
}
