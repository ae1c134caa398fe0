// Package crypt seals small secrets at rest — provider API keys in agent definitions now,
// SIP trunk passwords later — with AES-256-GCM under one server key.
//
// A sealed value is text, so it fits in JSONB and text columns: a version prefix and the
// standard base64 of nonce‖ciphertext‖tag, e.g. "v1:Jx9…". The version lets a later
// release rotate the key or the algorithm and still open what v1 sealed.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the key length AES-256 needs.
const KeySize = 32

// prefixV1 marks AES-256-GCM with a 12-byte random nonce. Random nonces are safe here:
// GCM's 2^32-messages-per-key bound is far beyond the number of secrets one
// installation ever seals.
const prefixV1 = "v1:"

// ErrOpen is returned for a value that is not one this Box sealed: a wrong key, a
// truncated or tampered ciphertext, or not a sealed value at all. It deliberately does
// not say which.
var ErrOpen = errors.New("crypt: cannot open sealed value (wrong key or tampered)")

// Box seals and opens secrets with one key. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("crypt: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext and returns "v1:" + base64(nonce‖ciphertext). Sealing the same
// plaintext twice gives different results.
func (b *Box) Seal(plaintext string) (string, error) {
	ns := b.aead.NonceSize()
	buf := make([]byte, ns, ns+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("crypt: nonce: %w", err)
	}
	out := b.aead.Seal(buf, buf[:ns], []byte(plaintext), nil)
	return prefixV1 + base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts a value Seal returned. Any tampering, a wrong key or an unknown version
// gives ErrOpen (wrapped).
func (b *Box) Open(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, prefixV1)
	if !ok {
		return "", fmt.Errorf("%w: unknown format", ErrOpen)
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return "", fmt.Errorf("%w: bad encoding", ErrOpen)
	}
	ns := b.aead.NonceSize()
	if len(raw) < ns+b.aead.Overhead() {
		return "", fmt.Errorf("%w: too short", ErrOpen)
	}
	pt, err := b.aead.Open(nil, raw[:ns], raw[ns:], nil)
	if err != nil {
		return "", ErrOpen
	}
	return string(pt), nil
}

// IsSealed reports whether s looks like a value Seal produced (it does not check that
// it opens).
func IsSealed(s string) bool { return strings.HasPrefix(s, prefixV1) }

// ParseKey reads a key from configuration (PARLEY_SECRET_KEY and the like): 64 hex
// characters, or standard or URL-safe base64 (padded or not) of 32 bytes. Surrounding
// whitespace is ignored, since keys often come from files with a trailing newline.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("crypt: empty key")
	}
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("crypt: key decodes to %d bytes, want %d", len(k), KeySize)
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("crypt: key must be %d hex characters or base64 of %d bytes", 2*KeySize, KeySize)
}

// GenerateKey returns a fresh random key, for `parley dev` and tests.
func GenerateKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}
