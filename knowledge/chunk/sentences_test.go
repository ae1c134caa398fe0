package chunk

import (
	"reflect"
	"testing"
)

func TestSentences(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"simple", "One. Two! Three? Four", []string{"One.", "Two!", "Three?", "Four"}},
		{"abbreviations", "Ask Dr. Smith, e.g. about refunds. Mr. Jones agrees.", []string{"Ask Dr. Smith, e.g. about refunds.", "Mr. Jones agrees."}},
		{"initials", "J. R. R. Tolkien wrote it. Then he slept.", []string{"J. R. R. Tolkien wrote it.", "Then he slept."}},
		{"decimals and versions", "It takes 3.5 days. Version 1.2.3 fixed it.", []string{"It takes 3.5 days.", "Version 1.2.3 fixed it."}},
		{"ellipsis", "Wait... and then... Nothing happened… Next.", []string{"Wait... and then...", "Nothing happened…", "Next."}},
		{"lowercase after period", "Use the app, i.e. the dashboard. it is not a sentence start. Fine.", []string{"Use the app, i.e. the dashboard. it is not a sentence start.", "Fine."}},
		{"closing quotes", `He said "stop." Then "go!" And (this.) Done.`, []string{`He said "stop."`, `Then "go!"`, `And (this.)`, "Done."}},
		{"urls and emails", "Visit example.com. Write to a@b.co. Thanks.", []string{"Visit example.com.", "Write to a@b.co.", "Thanks."}},
		{"etc ends sentences", "Apples, pears, etc. The rest is fruit.", []string{"Apples, pears, etc.", "The rest is fruit."}},
		{"numbers start sentences", "It failed. 42 tests ran.", []string{"It failed.", "42 tests ran."}},
		{"CJK", "退款需要十四天。请联系我们！谢谢", []string{"退款需要十四天。", "请联系我们！", "谢谢"}},
		{"no terminator", "just words here", []string{"just words here"}},
		{"repeated marks", "Really?! Yes.", []string{"Really?!", "Yes."}},
		{"empty", "   ", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := sentences(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("sentences(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}
