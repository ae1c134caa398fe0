package extract

import (
	"errors"
	"strings"
	"testing"
)

// noisyPage is a typical CMS page: the article sits among navigation, a cookie banner,
// scripts, styles, a sidebar, a newsletter form, share buttons and a footer.
const noisyPage = `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Refund policy &ndash; Acme Help Center</title>
  <style>body { font-family: sans-serif } .hidden { display: none }</style>
  <script>window.dataLayer = [];function gtag(){dataLayer.push(arguments)}</script>
</head>
<body>
  <a class="skip-link" href="#main">Skip to content</a>
  <div id="cookie-consent">We use cookies. <button>Accept all</button></div>
  <header class="site-header"><a href="/">Acme</a><nav><ul><li><a href="/pricing">Pricing</a></li><li><a href="/docs">Docs</a></li></ul></nav></header>
  <div class="layout">
    <aside class="sidebar"><h3>Related articles</h3><ul><li>Changing your plan</li></ul></aside>
    <main id="main">
      <article>
        <header><h1>Refund policy</h1><p class="byline">Updated <time>2024-05-01</time></p></header>
        <p>We refund any charge within <strong>14&nbsp;days</strong> of the request &mdash; no questions asked.
           Contact <a href="mailto:billing@acme.example">billing</a> if you were charged twice.</p>
        <div style="display: none">Internal note: escalate to Dana.</div>
        <p hidden>Old policy: 30 days.</p>
        <span aria-hidden="true">★★★★★</span>
        <h2>How to request a refund</h2>
        <ol>
          <li>Open <em>Billing</em>.</li>
          <li>Select the invoice.
            <ul><li>Only paid invoices qualify.</li></ul>
          </li>
          <li>Click <b>Refund</b>.</li>
        </ol>
        <h2>Refund times</h2>
        <table>
          <thead><tr><th>Method</th><th>Time</th></tr></thead>
          <tbody>
            <tr><td>Card</td><td>5&ndash;10 days</td></tr>
            <tr><td>Bank transfer</td><td>3 days</td></tr>
          </tbody>
        </table>
        <blockquote>Refunds are final once issued.</blockquote>
        <pre><code>curl -X POST https://api.acme.example/refunds \
  -d invoice=inv_123</code></pre>
        <p>First line<br>second line<br><br>A separate paragraph.</p>
        <form class="newsletter"><label>Email</label><input type="email"><button>Subscribe</button></form>
        <div class="share">Share on Twitter</div>
        <footer>Tags: billing, refunds</footer>
      </article>
    </main>
  </div>
  <footer class="site-footer"><p>&copy; 2024 Acme Inc.</p><nav>Privacy · Terms</nav></footer>
  <iframe src="https://chat.example/widget"></iframe>
  <noscript>Enable JavaScript</noscript>
  <template><p>Template text</p></template>
  <svg><text>SVG label</text></svg>
</body>
</html>`

func TestHTMLArticleOnly(t *testing.T) {
	t.Parallel()
	doc, err := HTML([]byte(noisyPage))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Refund policy – Acme Help Center" {
		t.Errorf("title %q", doc.Title)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Refund policy"},
		{Kind: Paragraph, Text: "Updated 2024-05-01"},
		{Kind: Paragraph, Text: "We refund any charge within 14 days of the request — no questions asked. Contact billing if you were charged twice."},
		{Kind: Heading, Level: 2, Text: "How to request a refund"},
		{Kind: ListItem, Text: "1. Open Billing."},
		{Kind: ListItem, Text: "2. Select the invoice."},
		{Kind: ListItem, Level: 1, Text: "Only paid invoices qualify."},
		{Kind: ListItem, Text: "3. Click Refund."},
		{Kind: Heading, Level: 2, Text: "Refund times"},
		{Kind: TableRow, Text: "Method: Card; Time: 5–10 days"},
		{Kind: TableRow, Text: "Method: Bank transfer; Time: 3 days"},
		{Kind: Paragraph, Text: "Refunds are final once issued."},
		{Kind: Code, Text: "curl -X POST https://api.acme.example/refunds \\\n  -d invoice=inv_123"},
		{Kind: Paragraph, Text: "First line second line"},
		{Kind: Paragraph, Text: "A separate paragraph."},
	})
	text := doc.Text()
	for _, noise := range []string{"cookie", "Skip to", "Pricing", "Related", "dataLayer", "font-family", "Internal note",
		"Old policy", "★", "Subscribe", "Share", "Tags", "©", "Privacy", "JavaScript", "Template", "SVG"} {
		if strings.Contains(text, noise) {
			t.Errorf("noise %q kept:\n%s", noise, text)
		}
	}
}

func TestHTMLVariants(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		html  string
		title string
		want  []Block
	}{
		{
			name:  "no main: whole body minus chrome",
			html:  `<html><head><title>FAQ</title></head><body><nav>Home</nav><h2>Opening hours</h2><div>Mon&ndash;Fri 9&ndash;17.</div><div>Closed on holidays.</div><footer>Footer</footer></body></html>`,
			title: "FAQ",
			want: []Block{
				{Kind: Heading, Level: 2, Text: "Opening hours"},
				{Kind: Paragraph, Text: "Mon–Fri 9–17."},
				{Kind: Paragraph, Text: "Closed on holidays."},
			},
		},
		{
			name:  "several articles",
			html:  `<body><header>Site</header><article><h2>Post one</h2><p>Alpha.</p></article><aside>Ad</aside><article><h2>Post two</h2><p>Beta.</p></article></body>`,
			title: "Post one",
			want: []Block{
				{Kind: Heading, Level: 2, Text: "Post one"},
				{Kind: Paragraph, Text: "Alpha."},
				{Kind: Heading, Level: 2, Text: "Post two"},
				{Kind: Paragraph, Text: "Beta."},
			},
		},
		{
			name: "tiny main is a teaser: read the body",
			html: `<body><main><p>Hi.</p></main><div><p>` + strings.Repeat("Real content sits outside main here. ", 20) + `</p></div></body>`,
			want: []Block{
				{Kind: Paragraph, Text: "Hi."},
				{Kind: Paragraph, Text: strings.TrimSpace(strings.Repeat("Real content sits outside main here. ", 20))},
			},
		},
		{
			name:  "legacy charset",
			html:  "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1252\"><title>Caf\xe9</title></head><body><p>Cr\xe8me br\xfbl\xe9e \x80 5</p></body></html>",
			title: "Café",
			want:  []Block{{Kind: Paragraph, Text: "Crème brûlée € 5"}},
		},
		{
			name:  "layout table and role landmarks",
			html:  `<body><div role="navigation">Menu</div><table role="presentation"><tr><td><h2>Welcome</h2><p>Text in a layout cell.</p></td></tr></table><div role="contentinfo">Legal</div></body>`,
			title: "Welcome", // no <title>: the first heading
			want: []Block{
				{Kind: Heading, Level: 2, Text: "Welcome"},
				{Kind: Paragraph, Text: "Text in a layout cell."},
			},
		},
		{
			name: "broken markup",
			html: `<p>Unclosed <b>bold <i>both</b> tail<p>Next & last <3`,
			want: []Block{
				{Kind: Paragraph, Text: "Unclosed bold both tail"},
				{Kind: Paragraph, Text: "Next & last <3"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc, err := HTML([]byte(tc.html))
			if err != nil {
				t.Fatal(err)
			}
			if doc.Title != tc.title {
				t.Errorf("title %q, want %q", doc.Title, tc.title)
			}
			assertBlocks(t, doc.Blocks, tc.want)
		})
	}
}

func TestHTMLTooDeep(t *testing.T) {
	t.Parallel()
	// Past 512 open elements the parser gives up; the tokenizer fallback still reads it.
	page := "<html><head><title>Old page</title><style>p{}</style></head><body><h1>Welcome</h1>" +
		strings.Repeat("<font size=2>", 3000) + "<p>Deep text.<script>var x</script></p><nav>Menu</nav><p>More text.</p>"
	doc, err := HTML([]byte(page))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Old page" {
		t.Errorf("title %q", doc.Title)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Welcome"},
		{Kind: Paragraph, Text: "Deep text."},
		{Kind: Paragraph, Text: "More text."},
	})
}

func TestHTMLEmpty(t *testing.T) {
	t.Parallel()
	for _, page := range []string{"", "<html><head><title>Only a title</title><script>x()</script></head><body><nav>Menu</nav></body></html>"} {
		if _, err := HTML([]byte(page)); !errors.Is(err, ErrEmpty) {
			t.Errorf("HTML(%q) err = %v, want ErrEmpty", page, err)
		}
	}
}
