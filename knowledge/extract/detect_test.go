package extract

import (
	"archive/zip"
	"bytes"
	"errors"
	"testing"
)

func TestDetect(t *testing.T) {
	t.Parallel()
	docx := readFixture(t, "handbook.docx")
	pdf := readFixture(t, "guide.pdf")
	plainZip := func() []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("photos/readme.txt")
		w.Write([]byte("holiday photos"))
		zw.Close()
		return buf.Bytes()
	}()
	xlsx := buildDOCX(t, map[string]string{"xl/workbook.xml": "<workbook/>"})
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
	elf := append([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00"), make([]byte, 64)...)
	pe := append([]byte("MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"), make([]byte, 64)...)
	ole := append([]byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}, make([]byte, 504)...)
	jpeg := []byte{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00}
	gz := []byte{0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03}

	for _, tc := range []struct {
		name, filename, contentType string
		head                        []byte
		want                        Format // "" means ErrUnsupported
	}{
		{"txt", "notes.txt", "", []byte("hello"), FormatText},
		{"md", "README.md", "", []byte("# Title"), FormatMarkdown},
		{"markdown upper case", "GUIDE.MARKDOWN", "", []byte("# Title"), FormatMarkdown},
		{"htm", "page.htm", "", []byte("<p>hi</p>"), FormatHTML},
		{"html by windows path", `C:\Users\me\page.html`, "", []byte("<p>hi</p>"), FormatHTML},
		{"csv", "prices.csv", "application/vnd.ms-excel", []byte("a;b\n1;2"), FormatCSV},
		{"tsv", "prices.tsv", "", []byte("a\tb"), FormatCSV},
		{"pdf by name", "guide.pdf", "", pdf, FormatPDF},
		{"pdf by name, no head", "guide.pdf", "", nil, FormatPDF},
		{"pdf named txt", "guide.txt", "text/plain", pdf, FormatPDF},
		{"pdf with junk before header", "", "", append([]byte("\r\n\r\n"), pdf...), FormatPDF},
		{"docx by name", "handbook.docx", "", docx, FormatDOCX},
		{"docx without name", "", "application/octet-stream", docx, FormatDOCX},
		{"docx head only", "", "", docx[:1024], FormatDOCX},
		{"damaged docx keeps its claim", "broken.docx", "", []byte("PK\x03\x04garbage"), FormatDOCX},
		{"content type html", "/docs/getting-started", "text/html", []byte("<!doctype html><title>x</title>"), FormatHTML},
		{"html served as text/plain", "/faq", "text/plain", []byte("<!DOCTYPE html><html><body>x"), FormatHTML},
		{"content type markdown", "", "text/markdown; charset=utf-8", []byte("# x"), FormatMarkdown},
		{"content type pdf", "download", "application/pdf", pdf, FormatPDF},
		{"content type csv", "export", "text/csv", []byte("a,b"), FormatCSV},
		{"unknown extension, text content type", "page.php", "text/plain", []byte("hello"), FormatText},
		{"other text type", "main.go", "text/x-go", []byte("package main"), FormatText},
		{"json is text", "data", "application/json", []byte(`{"a":1}`), FormatText},
		{"sniff html", "", "", []byte("\ufeff  <!-- generated -->\n<!DOCTYPE HTML PUBLIC>\n<html>"), FormatHTML},
		{"sniff xhtml", "", "", []byte(`<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">`), FormatHTML},
		{"sniff text", "", "", []byte("Just some words.\nAnd more."), FormatText},
		{"sniff latin-1 text", "", "", []byte("Caf\xe9 cr\xe8me"), FormatText},
		{"text that starts like a magic", "bmw.txt", "", []byte("BMW owners manual"), FormatText},
		{"UTF-16 text", "notes.txt", "", []byte("\xff\xfeh\x00i\x00"), FormatText},

		{"png", "logo.png", "image/png", png, ""},
		{"png named txt", "logo.txt", "", png, ""},
		{"png without name", "", "", png, ""},
		{"jpeg by content type", "photo", "image/jpeg", jpeg, ""},
		{"elf", "parley", "", elf, ""},
		{"windows exe", "setup.exe", "application/x-msdownload", pe, ""},
		{"legacy doc", "report.doc", "application/msword", ole, ""},
		{"legacy doc named docx", "report.docx", "", ole, ""},
		{"doc by name only", "report.doc", "", nil, ""},
		{"plain zip", "archive.zip", "application/zip", plainZip, ""},
		{"plain zip named docx", "fake.docx", "", plainZip, ""},
		{"xlsx", "sheet.xlsx", "", xlsx, ""},
		{"xlsx without name", "", "", xlsx, ""},
		{"gzip", "data.csv.gz", "", gz, ""},
		{"rtf", "letter.rtf", "", []byte(`{\rtf1\ansi hello}`), ""},
		{"binary named csv", "dump.csv", "", []byte("a,b\x00\x00\x01\x02"), ""},
		{"image content type", "x", "image/webp", []byte("RIFF\x00\x00\x00\x00WEBPVP8 "), ""},
		{"video content type", "clip", "video/mp4", []byte("...."), ""},
		{"nothing to go on", "", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Detect(tc.filename, tc.contentType, tc.head)
			if tc.want == "" {
				if !errors.Is(err, ErrUnsupported) {
					t.Errorf("Detect = %q, %v; want ErrUnsupported", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Detect = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
