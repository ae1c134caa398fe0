// Package ids makes the opaque, prefixed identifiers Parley hands out (agent_…, call_…).
package ids

import (
	"crypto/rand"
	"strings"
)

// alphabet is lowercase base32 without padding: URL-safe, case-insensitive-friendly.
const alphabet = "abcdefghijklmnopqrstuvwxyz234567"

// New returns prefix + "_" + 20 random base32 characters (100 bits of entropy).
func New(prefix string) string {
	var b [20]byte
	rand.Read(b[:])
	var sb strings.Builder
	sb.Grow(len(prefix) + 1 + len(b))
	sb.WriteString(prefix)
	sb.WriteByte('_')
	for _, c := range b {
		sb.WriteByte(alphabet[c&31])
	}
	return sb.String()
}

// HasPrefix reports whether id looks like an ID of the given kind.
func HasPrefix(id, prefix string) bool {
	return len(id) > len(prefix)+1 && strings.HasPrefix(id, prefix+"_")
}
