package httpapi

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/invopop/jsonschema"
)

// The OpenAPI document is generated from the route table, so it cannot drift from the
// routes actually served; a test also walks it against the live mux.

var pathParamRE = regexp.MustCompile(`\{([a-zA-Z_][a-zA-Z0-9_]*)(\.\.\.)?\}`)

type openAPIDoc struct {
	once sync.Once
	body []byte
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	s.openapi.once.Do(func() {
		b, err := json.MarshalIndent(s.OpenAPI(), "", "  ")
		if err != nil {
			panic(err) // the document is built from static types; failure is a programming error
		}
		s.openapi.body = b
	})
	w.Header().Set("Content-Type", "application/json")
	w.Write(s.openapi.body)
	return nil
}

// OpenAPI builds the OpenAPI 3.1 document for the route table.
func (s *Server) OpenAPI() map[string]any {
	refl := &jsonschema.Reflector{
		AllowAdditionalProperties:  true,
		RequiredFromJSONSchemaTags: true, // only fields tagged required are required
		DoNotReference:             false,
	}
	schemas := map[string]any{}
	schemaOf := func(v any) any {
		if v == nil {
			return nil
		}
		if l, ok := v.(listOf); ok {
			return map[string]any{
				"type": "object",
				"properties": map[string]any{
					l.Name:     map[string]any{"type": "array", "items": reflectSchema(refl, l.Item, schemas)},
					"total":    map[string]any{"type": "integer"},
					"limit":    map[string]any{"type": "integer"},
					"offset":   map[string]any{"type": "integer"},
					"has_more": map[string]any{"type": "boolean"},
				},
				"required": []string{l.Name, "total", "limit", "offset", "has_more"},
			}
		}
		return reflectSchema(refl, v, schemas)
	}
	errorRef := map[string]any{"$ref": "#/components/schemas/Error"}
	paths := map[string]map[string]any{}
	for _, rt := range s.table {
		path := strings.TrimSuffix(rt.Path, "{$}")
		if path == "" {
			path = "/"
		}
		op := map[string]any{
			"summary":     rt.Summary,
			"operationId": operationID(rt),
			"tags":        []string{rt.Tag},
		}
		var params []any
		for _, m := range pathParamRE.FindAllStringSubmatch(rt.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if rt.List {
			params = append(params,
				map[string]any{"name": "limit", "in": "query", "schema": map[string]any{"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
				map[string]any{"name": "offset", "in": "query", "schema": map[string]any{"type": "integer", "minimum": 0, "default": 0}})
		}
		qk := make([]string, 0, len(rt.Query))
		for k := range rt.Query {
			qk = append(qk, k)
		}
		sort.Strings(qk)
		for _, k := range qk {
			params = append(params, map[string]any{"name": k, "in": "query", "description": rt.Query[k], "schema": map[string]any{"type": "string"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.Request != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": schemaOf(rt.Request)}}}
		}
		status := rt.Status
		if status == 0 {
			status = http.StatusOK
		}
		okResp := map[string]any{"description": http.StatusText(status)}
		if rt.Response != nil {
			okResp["content"] = map[string]any{"application/json": map[string]any{"schema": schemaOf(rt.Response)}}
		}
		responses := map[string]any{itoa(status): okResp}
		errResp := func(desc string) map[string]any {
			return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": errorRef}}}
		}
		switch rt.Auth {
		case authUser:
			op["security"] = []any{map[string]any{"bearerAuth": []string{}}}
			responses["401"] = errResp("Missing or invalid token")
			responses["429"] = errResp("Rate limited; see Retry-After")
		case authPublic:
			op["security"] = []any{}
			responses["429"] = errResp("Rate limited; see Retry-After")
		default:
			op["security"] = []any{}
		}
		if len(pathParamRE.FindAllString(rt.Path, -1)) > 0 && rt.Auth == authUser {
			responses["404"] = errResp("Not found (or another tenant's)")
		}
		if rt.Request != nil {
			responses["400"] = errResp("Malformed JSON or wrong type")
			responses["413"] = errResp("Body too large")
			responses["422"] = errResp("Validation failed; see fields")
		}
		op["responses"] = responses
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		paths[path][strings.ToLower(rt.Method)] = op
	}
	schemas["Error"] = map[string]any{
		"type": "object",
		"properties": map[string]any{
			"detail": map[string]any{"type": "string"},
			"code":   map[string]any{"type": "string"},
			"fields": map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}},
		},
		"required": []string{"detail", "code"},
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "Parley API",
			"version":     s.deps.Version,
			"description": "Parley's REST API. Mirrors Call2Me's /v1 API and Call24x7's compatibility routes.",
		},
		"servers": []any{map[string]any{"url": s.cfg.PublicURL}},
		"paths":   paths,
		"components": map[string]any{
			"schemas": schemas,
			"securitySchemes": map[string]any{
				"bearerAuth": map[string]any{"type": "http", "scheme": "bearer",
					"description": "A JWT from /v1/auth/login, or an API key (sk_…)."},
			},
		},
	}
}

// reflectSchema reflects v's type, moving its definitions into schemas and pointing
// references at #/components/schemas.
func reflectSchema(refl *jsonschema.Reflector, v any, schemas map[string]any) any {
	sch := refl.Reflect(v)
	raw, _ := json.Marshal(sch)
	raw = []byte(strings.ReplaceAll(string(raw), "#/$defs/", "#/components/schemas/"))
	var m map[string]any
	json.Unmarshal(raw, &m)
	if defs, ok := m["$defs"].(map[string]any); ok {
		for k, d := range defs {
			if dm, ok := d.(map[string]any); ok {
				delete(dm, "$schema")
				delete(dm, "$id")
			}
			schemas[k] = d
		}
	}
	delete(m, "$defs")
	delete(m, "$schema")
	delete(m, "$id")
	return m
}

func operationID(rt route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.Method))
	for _, part := range strings.Split(rt.Path, "/") {
		part = strings.Trim(part, "{}.$")
		if part == "" || part == "v1" {
			continue
		}
		for _, w := range strings.FieldsFunc(part, func(r rune) bool { return r == '-' || r == '_' || r == '.' }) {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (s *Server) handleDocs(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write([]byte(docsPage))
	return nil
}

// docsPage renders /openapi.json in the browser with no external assets, so it works on
// an air-gapped install.
const docsPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Parley API reference</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2230;background:#f7f8fb}
header{background:#1d2230;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.75}main{max-width:1040px;margin:0 auto;padding:20px 28px}
h2{margin:28px 0 8px;font-size:17px;border-bottom:1px solid #dde1ea;padding-bottom:4px}
details{background:#fff;border:1px solid #dde1ea;border-radius:6px;margin:6px 0}
summary{cursor:pointer;padding:8px 12px;display:flex;gap:12px;align-items:center}
.m{font:600 12px monospace;padding:2px 8px;border-radius:4px;color:#fff;min-width:52px;text-align:center}
.GET{background:#2f7d4f}.POST{background:#2f5f9e}.PATCH{background:#8a6d1d}.PUT{background:#6d4f9e}.DELETE{background:#a33b3b}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f2f4f8;padding:10px;overflow:auto;border-radius:4px;margin:6px 12px 12px}
.lock{font-size:12px;color:#6b7385}.body{padding:0 12px 10px}input{padding:6px 10px;width:320px;border:1px solid #ccd;border-radius:4px}
</style></head><body>
<header><h1>Parley API reference</h1><p>Generated from <a style="color:#9cf" href="/openapi.json">/openapi.json</a>. Authenticate with <code>Authorization: Bearer &lt;JWT or sk_ key&gt;</code>.</p></header>
<main><input id="q" placeholder="Filter routes…" autofocus><div id="out">Loading…</div></main>
<script>
const esc=s=>String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const groups={};
  for(const [path,ops] of Object.entries(doc.paths))for(const [m,op] of Object.entries(ops)){(groups[op.tags[0]]??=[]).push({path,m:m.toUpperCase(),op});}
  const render=f=>{let h='';for(const [tag,rows] of Object.entries(groups).sort()){
    const rs=rows.filter(x=>!f||(x.m+' '+x.path+' '+x.op.summary).toLowerCase().includes(f));if(!rs.length)continue;
    h+='<h2>'+esc(tag)+'</h2>';
    for(const {path,m,op} of rs.sort((a,b)=>a.path.localeCompare(b.path))){
      const auth=op.security&&op.security.length?'<span class="lock">bearer token</span>':'<span class="lock">public</span>';
      h+='<details><summary><span class="m '+m+'">'+m+'</span><code>'+esc(path)+'</code><span>'+esc(op.summary||'')+'</span>'+auth+'</summary><div class="body">';
      if(op.parameters)h+='<p>Parameters: '+op.parameters.map(p=>'<code>'+esc(p.name)+'</code> ('+p.in+')').join(', ')+'</p>';
      if(op.requestBody)h+='<p>Request body</p><pre>'+esc(JSON.stringify(op.requestBody.content['application/json'].schema,null,2))+'</pre>';
      h+='<p>Responses: '+Object.keys(op.responses).map(c=>'<code>'+c+'</code>').join(' ')+'</p></div></details>';}}
    document.getElementById('out').innerHTML=h||'No routes match.';};
  render('');document.getElementById('q').oninput=e=>render(e.target.value.toLowerCase());
}).catch(e=>{document.getElementById('out').textContent='Could not load /openapi.json: '+e;});
</script></body></html>`
