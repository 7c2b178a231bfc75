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
                        "422": problem("Unknown recipient, service or action, profile not allowed, the envelope has expired, or the body breaks the schema of its action (body-schema-invalid, with `errors`)."),
                        "429": problem("The caller exceeds its request rate or bytes in flight; see Retry-After."),
                        "503": problem("The hub cannot accept now; see Retry-After.")
                    }
                }
            },
            "/v1/envelopes/batch": {
                "post": {
                    "operationId": "submitBatch",
                    "summary": "Submit several signed envelopes in one request",
                    "description": "Up to 100 envelopes, each taken through the acceptance pipeline of POST /v1/envelopes on its own and counted against the caller's request rate as if sent alone: each is accepted (202, its receipt), recognised as a duplicate (200, the original receipt) or refused (its problem), whatever happens to the others. The digest in a receipt is of the envelope string's UTF-8 bytes.",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": {
                            "type": "object", "required": ["envelopes"], "additionalProperties": false,
                            "properties": { "envelopes": { "type": "array", "minItems": 1, "maxItems": 100, "items": {
                                "type": "object", "required": ["media_type", "envelope"], "additionalProperties": false,
                                "properties": {
                                    "media_type": { "type": "string", "enum": ["application/xml", "application/jose+json"] },
                                    "envelope": { "type": "string", "description": "The signed envelope, exactly as it would be sent alone." }
                                }
                            } } }
                        } } }
                    },
                    "responses": {
                        "200": { "description": "One result per envelope, in the order sent.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["results"],
                            "properties": { "results": { "type": "array", "items": {
                                "type": "object", "required": ["status"],
                                "properties": {
                                    "status": { "type": "integer", "description": "202 accepted, 200 a duplicate, or the refusal's status." },
                                    "receipt": { "$ref": "#/components/schemas/Receipt" },
                                    "problem": { "$ref": "#/components/schemas/Problem" }
                                }
                            } } }
                        } } } },
                        "400": problem("The batch is not the JSON object described, or holds no envelope (batch-malformed)."),
                        "413": problem("More than 100 envelopes (batch-too-large), or more bytes than the hub accepts (envelope-too-large)."),
                        "429": problem("The caller has too many bytes in flight; see Retry-After.")
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
                        { "name": "lease", "in": "query", "description": "Lease duration, e.g. 30s.", "schema": { "type": "string" } },
                        { "name": "wait", "in": "query", "description": "When the inbox is empty, wait up to this long (e.g. 20s, capped by limits.max_wait) for envelopes to arrive before answering with none. A request its client gives up on leases nothing: what it took goes back to the inbox at once.", "schema": { "type": "string" } }
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
            "/v1/journal/entries": {
                "get": {
                    "operationId": "journalEntries",
                    "summary": "Journal entries by filter, in journal order (an entity sees only what it is party to; a listed auditor sees all, and its queries are journaled)",
                    "parameters": [
                        { "name": "entity", "in": "query", "description": "Either party: sender, recipient or actor.", "schema": { "type": "string" } },
                        { "name": "sender", "in": "query", "schema": { "type": "string" } },
                        { "name": "recipient", "in": "query", "schema": { "type": "string" } },
                        { "name": "service", "in": "query", "schema": { "type": "string" } },
                        { "name": "action", "in": "query", "schema": { "type": "string" } },
                        { "name": "conversation", "in": "query", "schema": { "type": "string" } },
                        { "name": "envelope_id", "in": "query", "schema": { "type": "string", "format": "uuid" } },
                        { "name": "kind", "in": "query", "schema": { "type": "string", "enum": ["received", "refused", "accepted", "delivered", "acknowledged", "answered", "expired", "dead_lettered", "queried", "pruned"] } },
                        { "name": "status", "in": "query", "description": "ok, refused, or a refusal code.", "schema": { "type": "string" } },
                        { "name": "from", "in": "query", "schema": { "type": "string", "format": "date-time" } },
                        { "name": "to", "in": "query", "schema": { "type": "string", "format": "date-time" } },
                        { "name": "after", "in": "query", "description": "Continue after this journal index (the previous page's next).", "schema": { "type": "integer" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
                    ],
                    "responses": {
                        "200": {
                            "description": "A page (JSON), or every matching entry streamed (Accept: application/x-ndjson or text/csv).",
                            "content": {
                                "application/json": { "schema": { "$ref": "#/components/schemas/JournalPage" } },
                                "application/x-ndjson": { "schema": { "$ref": "#/components/schemas/JournalItem" } },
                                "text/csv": { "schema": { "type": "string" } }
                            }
                        },
                        "400": problem("A filter is malformed."),
                        "403": problem("Not an entity or a listed auditor.")
                    }
                }
            },
            "/v1/journal/entries/{index}": {
                "get": {
                    "operationId": "journalEntry",
                    "summary": "One journal entry and its exact bytes",
                    "parameters": [{ "name": "index", "in": "path", "required": true, "schema": { "type": "integer" } }],
                    "responses": { "200": { "description": "The entry.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JournalItem" } } } }, "404": problem("No such entry the caller may see.") }
                }
            },
            "/v1/journal/envelopes/{id}/raw": {
                "get": {
                    "operationId": "journalEnvelopeRaw",
                    "summary": "The exact signed bytes received, so anyone can check the sender's signature again",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }],
                    "responses": {
                        "200": { "description": "The envelope.", "content": { "application/xml": { "schema": { "type": "string" } }, "application/jose+json": { "schema": { "$ref": "#/components/schemas/FlattenedJws" } } } },
                        "404": problem("No such envelope the caller may see."),
                        "410": problem("Its body was pruned after the retention period; its journal entries and digest remain.")
                    }
                }
            },
            "/v1/journal/checkpoint": { "get": { "operationId": "journalCheckpoint", "summary": "The latest signed checkpoint", "responses": { "200": { "description": "The checkpoint (tree size, root, time, hub signature and certificate)." }, "404": problem("None signed yet.") } } },
            "/v1/journal/checkpoints": {
                "get": {
                    "operationId": "journalCheckpoints",
                    "summary": "Signed checkpoints whose tree size is in [from, to] (at most 1,000 per call)",
                    "parameters": [
                        { "name": "from", "in": "query", "schema": { "type": "integer" } },
                        { "name": "to", "in": "query", "schema": { "type": "integer" } }
                    ],
                    "responses": { "200": { "description": "The checkpoints, in size order." } }
                }
            },
            "/v1/journal/proof/inclusion": {
                "get": {
                    "operationId": "journalInclusionProof",
                    "summary": "RFC 9162 inclusion proof of entry `index` in the tree of `size` entries",
                    "parameters": [
                        { "name": "index", "in": "query", "required": true, "schema": { "type": "integer" } },
                        { "name": "size", "in": "query", "required": true, "schema": { "type": "integer" } }
                    ],
                    "responses": { "200": { "description": "The proof's hashes (base64)." }, "400": problem("index < size <= the journal's size is required.") }
                }
            },
            "/v1/journal/proof/consistency": {
                "get": {
                    "operationId": "journalConsistencyProof",
                    "summary": "RFC 9162 consistency proof between the trees of `from` and `to` entries",
                    "parameters": [
                        { "name": "from", "in": "query", "required": true, "schema": { "type": "integer" } },
                        { "name": "to", "in": "query", "required": true, "schema": { "type": "integer" } }
                    ],
                    "responses": { "200": { "description": "The proof's hashes (base64)." }, "400": problem("from <= to <= the journal's size is required.") }
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
                        "detail": { "type": "string" },
                        "errors": {
                            "type": "array",
                            "description": "For a body refused by its schema (body-schema-invalid): each field at fault.",
                            "items": {
                                "type": "object",
                                "required": ["detail"],
                                "properties": {
                                    "pointer": { "type": "string", "description": "JSON pointer into a JSON body." },
                                    "path": { "type": "string", "description": "Element path in an XML body." },
                                    "line": { "type": "integer", "description": "Line in an XML body." },
                                    "detail": { "type": "string" }
                                }
                            }
                        }
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
                "JournalItem": {
                    "type": "object",
                    "required": ["index", "entry", "bytes"],
                    "properties": {
                        "index": { "type": "integer" },
                        "entry": { "type": "object", "description": "The entry's fields: index, kind, at, envelope_id, sender, recipient, service, action, conversation, digest, code, detail, actor." },
                        "bytes": { "type": "string", "description": "The entry's canonical bytes (base64): the leaf data of the Merkle tree." }
                    }
                },
                "JournalPage": {
                    "type": "object",
                    "required": ["entries"],
                    "properties": {
                        "entries": { "type": "array", "items": { "$ref": "#/components/schemas/JournalItem" } },
                        "next": { "type": ["integer", "null"], "description": "Pass as `after` for the next page." }
                    }
                },
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
