package errs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestKindsSurviveWrapping(t *testing.T) {
	t.Parallel()
	nf := NotFound("agent_not_found", "Agent not found")
	err := fmt.Errorf("agents: get x: %w", nf)
	if KindOf(err) != KindNotFound || !errors.Is(err, nf) {
		t.Fatalf("wrapped kind %v", KindOf(err))
	}
	if KindOf(errors.New("plain")) != KindInternal {
		t.Fatal("plain errors must be internal")
	}
}

func TestFields(t *testing.T) {
	t.Parallel()
	f := Fields{}
	if f.Err() != nil {
		t.Fatal("empty fields gave an error")
	}
	f.Add("name", "is required")
	f.Add("name", "second message is ignored")
	f.Add("language", "must be a BCP-47 tag, not %q", "xx-!!")
	e, ok := As(f.Err())
	if !ok || e.Kind != KindInvalid || e.Fields["name"] != "is required" || !strings.Contains(e.Fields["language"], "xx-!!") {
		t.Fatalf("%+v", e)
	}
}

func TestFromJSON(t *testing.T) {
	t.Parallel()
	type body struct {
		Name  string  `json:"name"`
		Temp  float64 `json:"temperature"`
		Inner struct {
			N int `json:"n"`
		} `json:"inner"`
	}
	cases := []struct {
		in, code, field string
	}{
		{`{"name": }`, "invalid_json", ""},
		{`{"name": "a"`, "invalid_json", ""},
		{`{"temperature": "hot"}`, "invalid_type", "temperature"},
		{`{"inner": {"n": 1.5}}`, "invalid_type", "inner.n"},
		{`[1,2]`, "invalid_type", "body"},
	}
	for _, c := range cases {
		var b body
		err := FromJSON(json.Unmarshal([]byte(c.in), &b), nil)
		e, ok := As(err)
		if !ok || e.Kind != KindBadRequest || e.Code != c.code || e.Detail == "" {
			t.Errorf("%s: %+v", c.in, err)
			continue
		}
		if c.field != "" && e.Fields[c.field] == "" {
			t.Errorf("%s: fields %v lack %s", c.in, e.Fields, c.field)
		}
	}
}
