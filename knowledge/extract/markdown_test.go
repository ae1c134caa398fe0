package extract

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const sampleMarkdown = `---
title: "Agent setup guide"
tags: [setup]
---

Setup guide
===========

Read this **before** your first call. See the [dashboard](https://app.example/dash "Dashboard")
or <https://docs.example>; escaped \*stars\* stay &amp; entities decode.

![screenshot](shot.png)

Requirements
------------

* A *phone number*
* An agent
  1. with a prompt
  2. with a ` + "`voice`" + `
* ~~Fax~~ Email

3. Third step first
4. Fourth

### Configure the webhook

` + "```json" + `
{
  "url": "https://example.com/hook"
}
` + "```" + `

    indented code

> **Note:** webhooks retry for 24 hours.

| Event | Retries |
|-------|--------:|
| call.completed | 10 |
| call.failed | |

- [x] Done task

<div align="center">Raw <b>HTML</b> block<script>alert(1)</script></div>

***

#### Final words
Thanks!
`

func TestMarkdown(t *testing.T) {
	t.Parallel()
	doc, err := Extract(FormatMarkdown, []byte(sampleMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Agent setup guide" {
		t.Errorf("title %q", doc.Title)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Setup guide"},
		{Kind: Paragraph, Text: "Read this before your first call. See the dashboard or https://docs.example; escaped *stars* stay & entities decode."},
		{Kind: Heading, Level: 2, Text: "Requirements"},
		{Kind: ListItem, Text: "A phone number"},
		{Kind: ListItem, Text: "An agent"},
		{Kind: ListItem, Level: 1, Text: "1. with a prompt"},
		{Kind: ListItem, Level: 1, Text: "2. with a voice"},
		{Kind: ListItem, Text: "Fax Email"},
		{Kind: ListItem, Text: "3. Third step first"},
		{Kind: ListItem, Text: "4. Fourth"},
		{Kind: Heading, Level: 3, Text: "Configure the webhook"},
		{Kind: Code, Text: "{\n  \"url\": \"https://example.com/hook\"\n}"},
		{Kind: Code, Text: "indented code"},
		{Kind: Paragraph, Text: "Note: webhooks retry for 24 hours."},
		{Kind: TableRow, Text: "Event: call.completed; Retries: 10"},
		{Kind: TableRow, Text: "Event: call.failed"},
		{Kind: ListItem, Text: "Done task"},
		{Kind: Paragraph, Text: "Raw HTML block"},
		{Kind: Heading, Level: 4, Text: "Final words"},
		{Kind: Paragraph, Text: "Thanks!"},
	})
	assertClean(t, doc)
}

func TestMarkdownTitleFromHeading(t *testing.T) {
	t.Parallel()
	doc, err := Extract(FormatMarkdown, []byte("Intro text.\r\n\r\n# Real title\r\n\r\n---\r\nnot front matter"))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Real title" {
		t.Errorf("title %q", doc.Title)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Paragraph, Text: "Intro text."},
		{Kind: Heading, Level: 1, Text: "Real title"},
		{Kind: Paragraph, Text: "not front matter"},
	})
}

func TestMarkdownEmpty(t *testing.T) {
	t.Parallel()
	if _, err := Extract(FormatMarkdown, []byte("---\ntitle: x\n---\n\n![img](a.png)\n\n***\n")); !errors.Is(err, ErrEmpty) {
		t.Errorf("err = %v, want ErrEmpty", err)
	}
}

// TestMarkdownPathological feeds input that makes CommonMark parsers quadratic; it must
// come back quickly (as plain text) instead of holding an ingestion worker for minutes.
func TestMarkdownPathological(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"nested quotes":     strings.Repeat(">", 200000) + " deep",
		"nested lists":      strings.Repeat("- ", 200000) + "deep",
		"unclosed brackets": strings.Repeat("[a](", 200000),
		"wide table":        "|" + strings.Repeat("h|", 5000) + "\n|" + strings.Repeat("-|", 5000) + "\n" + strings.Repeat("|x|\n", 5000),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			doc, err := Extract(FormatMarkdown, []byte(in))
			if err != nil || len(doc.Blocks) == 0 {
				t.Fatalf("err = %v, %d blocks", err, len(doc.Blocks))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
