// Package agents owns agent definitions: what an agent says and how (prompt, voice,
// language, LLM/STT/TTS provider settings), the functions (tools) it may call, the
// knowledge bases it searches, its post-call analysis fields, per-agent call statistics,
// and the test-function endpoint that calls one of its webhooks on demand.
//
// A definition arrives as raw JSON so that errors can be precise: malformed JSON and
// wrong types are errs.BadRequest naming the field, and every rule the definition breaks
// is reported at once as errs.Invalid with per-field messages. Create applies the body
// as an RFC 7386 merge patch onto an empty definition, Patch onto the stored one; both
// then run the same full validation, so a PATCH can never leave an agent in a state a
// POST could not have created.
//
// Storage. The agents row keeps the validated definition in the spec column (JSONB, so
// later issues can add fields without a migration: absent keys decode to their
// defaults), with provider API keys sealed by internal/crypt. Keys are write-only: the
// API shows "********" for a stored key and never decrypts on the read path; only
// Resolve, for the voice engine, opens them. Because reads vastly outnumber writes, the
// public JSON of each agent is rendered once at write time into the view column, and Get
// and List serve it as is: a read is one primary-key lookup and no decoding at all.
//
// Every query filters on tenant_id = $1, so another tenant's agent is indistinguishable
// from one that does not exist (ErrNotFound).
package agents
