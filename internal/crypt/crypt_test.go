package crypt

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func newBox(t *testing.T) *Box {
	t.Helper()
	b, err := New(GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	b := newBox(t)
	for _, pt := range []string{"", "sk-live-123", strings.Repeat("x", 10000), "ünïcødé 🔑", "'); DROP TABLE agents;--"} {
		s, err := b.Seal(pt)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, "v1:") || !IsSealed(s) {
			t.Fatalf("sealed %q has no version prefix", s)
		}
		if pt != "" && strings.Contains(s, pt) {
			t.Fatalf("ciphertext contains plaintext")
		}
		got, err := b.Open(s)
		if err != nil {
			t.Fatal(err)
		}
		if got != pt {
			t.Fatalf("Open = %q, want %q", got, pt)
		}
	}
}

func TestSealIsRandomised(t *testing.T) {
	t.Parallel()
	b := newBox(t)
	a1, _ := b.Seal("same")
	a2, _ := b.Seal("same")
	if a1 == a2 {
		t.Fatal("two seals of the same plaintext are equal; the nonce is not random")
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	b := newBox(t)
	good, _ := b.Seal("secret")
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(good, "v1:"))
	flip := func(i int) string {
		c := append([]byte(nil), raw...)
		c[i] ^= 1
		return "v1:" + base64.StdEncoding.EncodeToString(c)
	}
	other := newBox(t)
	fromOther, _ := other.Seal("secret")
	cases := map[string]string{
		"empty":           "",
		"no prefix":       strings.TrimPrefix(good, "v1:"),
		"unknown version": "v2:" + strings.TrimPrefix(good, "v1:"),
		"bad base64":      "v1:!!!",
		"too short":       "v1:" + base64.StdEncoding.EncodeToString(raw[:10]),
		"nonce flipped":   flip(0),
		"body flipped":    flip(13),
		"tag flipped":     flip(len(raw) - 1),
		"truncated":       "v1:" + base64.StdEncoding.EncodeToString(raw[:len(raw)-1]),
		"other key":       fromOther,
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := b.Open(s); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open(%q) err = %v, want ErrOpen", s, err)
			}
		})
	}
}

func TestNewKeyLength(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New with %d-byte key succeeded", n)
		}
	}
	if _, err := New(make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	key := GenerateKey()
	good := map[string]string{
		"hex":          hex.EncodeToString(key),
		"HEX":          strings.ToUpper(hex.EncodeToString(key)),
		"base64":       base64.StdEncoding.EncodeToString(key),
		"raw base64":   base64.RawStdEncoding.EncodeToString(key),
		"url base64":   base64.URLEncoding.EncodeToString(key),
		"raw url":      base64.RawURLEncoding.EncodeToString(key),
		"trailing \\n": hex.EncodeToString(key) + "\n",
	}
	for name, s := range good {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseKey(s)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(key) {
				t.Fatal("wrong key")
			}
		})
	}
	bad := map[string]string{
		"empty":         "",
		"short hex":     hex.EncodeToString(key[:16]),
		"long hex":      hex.EncodeToString(append(key, 1)),
		"16B base64":    base64.StdEncoding.EncodeToString(key[:16]),
		"garbage":       "not a key at all!",
		"hex with junk": hex.EncodeToString(key)[:62] + "zz",
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseKey(s); err == nil {
				t.Fatalf("ParseKey(%q) succeeded", s)
			}
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	box, _ := New(GenerateKey())
	for b.Loop() {
		box.Seal("sk-proj-0123456789abcdefghijklmnopqrstuvwxyz")
	}
}
