package voice

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/parleyhq/parley/voice/llm"
)

// placeholder matches {{name}} and {{name|fallback}}, spaces allowed inside the braces.
var placeholder = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_.\-]+)\s*(?:\|([^{}]*))?\}\}`)

// substitute fills the placeholders of text from vars in a single pass (a value that
// itself contains "{{x}}" is not expanded again). It returns the names of variables that
// were missing and had no fallback, each once, in order of appearance.
func substitute(text string, vars map[string]string) (string, []string) {
	if !strings.Contains(text, "{{") {
		return text, nil
	}
	var missing []string
	out := placeholder.ReplaceAllStringFunc(text, func(m string) string {
		sub := placeholder.FindStringSubmatch(m)
		name := sub[1]
		if v, ok := vars[name]; ok {
			return v
		}
		if strings.Contains(m, "|") {
			return strings.TrimSpace(sub[2])
		}
		if !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
		return ""
	})
	return out, missing
}

// knowledgeMessage renders retrieved passages as a system message for one request. It
// goes just before the caller's latest words rather than into the main system prompt,
// so the long, stable prefix of the conversation stays the same from request to
// request and providers' prompt caches keep hitting.
func knowledgeMessage(ps []Passage) llm.Message {
	var b strings.Builder
	b.WriteString("Information from the knowledge base that may help answer the caller's last message. ")
	b.WriteString("Use it only if relevant; do not mention that you looked it up.\n")
	for i, p := range ps {
		if p.Source != "" {
			fmt.Fprintf(&b, "\n[%d] (%s) %s\n", i+1, p.Source, strings.TrimSpace(p.Text))
		} else {
			fmt.Fprintf(&b, "\n[%d] %s\n", i+1, strings.TrimSpace(p.Text))
		}
	}
	return llm.Message{Role: llm.System, Content: b.String()}
}

// voiceGuidance is appended to every system prompt: the model's words are spoken, not
// shown, and the engine speaks them sentence by sentence.
const voiceGuidance = "\n\nYou are speaking on a phone call: your replies are converted to speech. " +
	"Answer in short, natural spoken sentences. Do not use Markdown, lists, emojis or URLs " +
	"unless asked to spell one out."
