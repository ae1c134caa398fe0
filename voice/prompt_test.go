package voice

import (
	"slices"
	"strings"
	"testing"

	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

func TestSubstitute(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"customer_name": "Alice", "plan": "Gold", "inject": "{{plan}}"}
	tests := []struct {
		in, want string
		missing  []string
	}{
		{"Hello {{customer_name}}.", "Hello Alice.", nil},
		{"Hello {{ customer_name }}, plan {{plan}}.", "Hello Alice, plan Gold.", nil},
		{"Hi {{first_name}}!", "Hi !", []string{"first_name"}},
		{"Hi {{first_name|there}}!", "Hi there!", nil},
		{"Hi {{ first_name | there }}!", "Hi there!", nil},
		{"Hi {{customer_name|there}}!", "Hi Alice!", nil},
		{"{{a}} {{b}} {{a}}", "  ", []string{"a", "b"}},
		{"Value: {{inject}}", "Value: {{plan}}", nil}, // values are not expanded again
		{"No placeholders {here}.", "No placeholders {here}.", nil},
		{"Broken {{ not a name }}", "Broken {{ not a name }}", nil},
	}
	for _, tc := range tests {
		got, missing := substitute(tc.in, vars)
		if got != tc.want || !slices.Equal(missing, tc.missing) {
			t.Errorf("substitute(%q) = %q, %v; want %q, %v", tc.in, got, missing, tc.want, tc.missing)
		}
	}
}

func TestMissingVariables(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	var cfg Config
	newEnvConfig(t, srv, &cfg)
	cfg.Agent.SystemPrompt = "Caller {{customer_name}}, account {{account_id}}."
	cfg.Agent.BeginMessage = "Hi {{first_name|there}}, about {{account_id}} and {{order}}."
	s, err := NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.MissingVariables(); !slices.Equal(got, []string{"account_id", "order"}) {
		t.Errorf("missing %v", got)
	}
	if p := s.SystemPrompt(); !strings.HasPrefix(p, "Caller Alice, account .") || !strings.Contains(p, "phone call") {
		t.Errorf("system prompt %q", p)
	}
}

func TestKnowledgeMessage(t *testing.T) {
	t.Parallel()
	m := knowledgeMessage([]Passage{{Text: " Parking is free. ", Source: "FAQ"}, {Text: "Open 9-6."}})
	if m.Role != "system" || !strings.Contains(m.Content, "[1] (FAQ) Parking is free.\n") || !strings.Contains(m.Content, "[2] Open 9-6.") {
		t.Errorf("%+v", m)
	}
}
