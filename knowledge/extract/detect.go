package extract

import (
	"archive/zip"
	"bytes"
	"fmt"
	"mime"
	"path"
	"strings"
)

// extFormats maps file extensions to formats.
var extFormats = map[string]Format{
	".txt": FormatText, ".text": FormatText,
	".md": FormatMarkdown, ".markdown": FormatMarkdown,
	".html": FormatHTML, ".htm": FormatHTML, ".xhtml": FormatHTML,
	".pdf":  FormatPDF,
	".docx": FormatDOCX,
	".csv":  FormatCSV, ".tsv": FormatCSV,
}

// unsupportedExts are types people try to upload that we know we cannot read. They are
// refused by name so that, say, a .doc file is not "read" as text full of binary debris.
var unsupportedExts = map[string]bool{
	".doc": true, ".dot": true, ".xls": true, ".xlsx": true, ".ppt": true, ".pptx": true, ".odt": true,
	".ods": true, ".odp": true, ".rtf": true, ".pages": true, ".key": true, ".numbers": true, ".epub": true,
	".docm": true, ".dotx": true, ".msg": true, ".eml": true,
	".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true, ".bmp": true, ".tif": true,
	".tiff": true, ".svg": true, ".ico": true, ".heic": true,
	".mp3": true, ".wav": true, ".ogg": true, ".m4a": true, ".flac": true, ".mp4": true, ".mov": true,
	".avi": true, ".mkv": true, ".webm": true,
	".zip": true, ".gz": true, ".tgz": true, ".tar": true, ".7z": true, ".rar": true, ".bz2": true,
	".xz": true, ".exe": true, ".dll": true, ".so": true, ".dylib": true, ".bin": true, ".msi": true,
	".dmg": true, ".apk": true, ".jar": true, ".iso": true, ".wasm": true, ".class": true, ".o": true,
}

// contentTypes maps media types (parameters stripped) to formats.
var contentTypes = map[string]Format{
	"text/plain":    FormatText,
	"text/markdown": FormatMarkdown, "text/x-markdown": FormatMarkdown,
	"text/html": FormatHTML, "application/xhtml+xml": FormatHTML,
	"application/pdf": FormatPDF, "application/x-pdf": FormatPDF,
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document": FormatDOCX,
	"text/csv": FormatCSV, "application/csv": FormatCSV, "text/tab-separated-values": FormatCSV,
}

// Detect decides the format of an upload or a fetched page from its file name (or URL
// path), its declared content type and its first bytes (the whole file works too, and
// lets a DOCX be told from other zip files more surely).
//
// The order is: a binary signature in head first (a PNG named notes.txt is still a PNG,
// and a PDF is a PDF whatever its name), then the extension, then the content type,
// then sniffing for HTML and plain text. Types that are known but not read (images,
// executables, archives, legacy .doc) wrap ErrUnsupported.
func Detect(filename, contentType string, head []byte) (Format, error) {
	ext := strings.ToLower(path.Ext(path.Base(strings.ReplaceAll(filename, `\`, "/"))))
	sig := sniffBinary(head, ext == ".docx")
	switch sig {
	case FormatPDF, FormatDOCX:
		return sig, nil
	case "":
	default:
		return "", fmt.Errorf("%w: %s", ErrUnsupported, sig)
	}
	if f, ok := extFormats[ext]; ok {
		if f != FormatPDF && f != FormatDOCX && looksBinary(head) {
			return "", fmt.Errorf("%w: %s file with binary content", ErrUnsupported, ext)
		}
		return f, nil
	}
	if unsupportedExts[ext] {
		return "", fmt.Errorf("%w: %s", ErrUnsupported, ext)
	}
	if ct, _, err := mime.ParseMediaType(contentType); err == nil && ct != "" && ct != "application/octet-stream" {
		if f, ok := contentTypes[ct]; ok {
			if f != FormatPDF && f != FormatDOCX && looksBinary(head) {
				return "", fmt.Errorf("%w: %s with binary content", ErrUnsupported, ct)
			}
			if f == FormatText && looksLikeHTML(head) {
				return FormatHTML, nil // a web server that labels its pages text/plain
			}
			return f, nil
		}
		if !strings.HasPrefix(ct, "text/") && ct != "application/json" && ct != "application/xml" {
			return "", fmt.Errorf("%w: %s", ErrUnsupported, ct)
		}
	}
	switch {
	case len(head) == 0:
		return "", fmt.Errorf("%w: nothing to detect", ErrUnsupported)
	case looksBinary(head):
		return "", fmt.Errorf("%w: binary content", ErrUnsupported)
	case looksLikeHTML(head):
		return FormatHTML, nil
	}
	return FormatText, nil
}

// sniffBinary recognises binary formats by their magic bytes. It returns FormatPDF,
// FormatDOCX, "" (no binary signature) or a short name of an unsupported type.
// claimsDOCX lets a damaged zip that calls itself .docx through, so that Extract can
// report it as corrupt rather than unsupported.
func sniffBinary(head []byte, claimsDOCX bool) Format {
	// PDF readers accept junk before the header within the first KiB, and so do we.
	if i := bytes.Index(head[:min(len(head), 1024)], []byte("%PDF-")); i >= 0 {
		return FormatPDF
	}
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return sniffZip(head, claimsDOCX)
	case bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return "empty zip archive"
	case bytes.HasPrefix(head, []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}):
		return "legacy Office document (.doc/.xls/.ppt) or encrypted Office file"
	case bytes.HasPrefix(head, []byte("{\\rtf")):
		return "RTF document"
	}
	binary := looksBinary(head)
	for _, m := range magics {
		if len(head) >= m.offset+len(m.sig) && bytes.Equal(head[m.offset:m.offset+len(m.sig)], m.sig) && (binary || !m.weak) {
			return Format(m.name)
		}
	}
	return ""
}

// magics are the signatures of common binary files. Weak ones are printable ASCII that
// could begin a text file ("BMW owners' manual", "MZ Motors"), so they only count when the
// content is binary as well.
var magics = []struct {
	offset int
	sig    []byte
	name   string
	weak   bool
}{
	{0, []byte("\x89PNG\r\n\x1a\n"), "PNG image", false},
	{0, []byte{0xFF, 0xD8, 0xFF}, "JPEG image", false},
	{0, []byte("GIF87a"), "GIF image", false},
	{0, []byte("GIF89a"), "GIF image", false},
	{8, []byte("WEBP"), "WebP image", false},
	{8, []byte("WAVE"), "WAV audio", false},
	{8, []byte("AVI "), "AVI video", false},
	{0, []byte("BM"), "BMP image", true},
	{0, []byte("II*\x00"), "TIFF image", false},
	{0, []byte("MM\x00*"), "TIFF image", false},
	{4, []byte("ftyp"), "MP4/QuickTime media", false},
	{0, []byte("ID3"), "MP3 audio", true},
	{0, []byte("OggS"), "Ogg media", true},
	{0, []byte("fLaC"), "FLAC audio", true},
	{0, []byte("\x1aE\xdf\xa3"), "Matroska/WebM video", false},
	{0, []byte("\x7fELF"), "ELF executable", false},
	{0, []byte("MZ"), "Windows executable", true},
	{0, []byte{0xCF, 0xFA, 0xED, 0xFE}, "Mach-O executable", false},
	{0, []byte{0xCE, 0xFA, 0xED, 0xFE}, "Mach-O executable", false},
	{0, []byte{0xCA, 0xFE, 0xBA, 0xBE}, "Mach-O or Java class file", false},
	{0, []byte("\x00asm"), "WebAssembly module", false},
	{0, []byte{0x1F, 0x8B}, "gzip archive", false},
	{0, []byte("BZh"), "bzip2 archive", true},
	{0, []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}, "xz archive", false},
	{0, []byte{'7', 'z', 0xBC, 0xAF, 0x27, 0x1C}, "7z archive", false},
	{0, []byte("Rar!"), "RAR archive", true},
	{0, []byte{0x28, 0xB5, 0x2F, 0xFD}, "zstd archive", false},
	{257, []byte("ustar"), "tar archive", true},
	{0, []byte("SQLite format 3\x00"), "SQLite database", false},
}

// sniffZip tells a DOCX from other zip files. With the whole file it reads the central
// directory; with only a head it looks for the part names in the local file headers,
// which every Office writer puts near the start.
func sniffZip(head []byte, claimsDOCX bool) Format {
	if zr, err := zip.NewReader(bytes.NewReader(head), int64(len(head))); err == nil {
		for _, f := range zr.File {
			if f.Name == "word/document.xml" || strings.HasPrefix(f.Name, "word/") && strings.HasSuffix(f.Name, ".xml") {
				return FormatDOCX
			}
		}
		return "zip archive (not a Word document)"
	}
	if bytes.Contains(head, []byte("word/")) || claimsDOCX {
		return FormatDOCX
	}
	return "zip archive (not a Word document)"
}

// looksBinary reports whether head is not text: a NUL byte (outside UTF-16) or more than
// 2% control characters in the first 8 KiB.
func looksBinary(head []byte) bool {
	if bytes.HasPrefix(head, []byte{0xFF, 0xFE}) || bytes.HasPrefix(head, []byte{0xFE, 0xFF}) {
		return false
	}
	h := head[:min(len(head), 8192)]
	ctl := 0
	for _, c := range h {
		switch {
		case c == 0:
			return true
		case c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' && c != 0x1B:
			ctl++
		}
	}
	return ctl*50 > len(h)
}

// looksLikeHTML reports whether head starts, after whitespace, a BOM and comments, with a
// doctype or an <html>, <head> or <body> tag.
func looksLikeHTML(head []byte) bool {
	h := bytes.TrimPrefix(head[:min(len(head), 4096)], []byte{0xEF, 0xBB, 0xBF})
	for {
		h = bytes.TrimLeft(h, " \t\r\n\f")
		if bytes.HasPrefix(h, []byte("<!--")) {
			end := bytes.Index(h, []byte("-->"))
			if end < 0 {
				return false
			}
			h = h[end+3:]
			continue
		}
		if bytes.HasPrefix(h, []byte("<?xml")) {
			end := bytes.Index(h, []byte("?>"))
			if end < 0 {
				return false
			}
			h = h[end+2:]
			continue
		}
		break
	}
	lower := bytes.ToLower(h[:min(len(h), 16)])
	for _, p := range []string{"<!doctype html", "<html", "<head", "<body"} {
		if bytes.HasPrefix(lower, []byte(p)) {
			return true
		}
	}
	return false
}
