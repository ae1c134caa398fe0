package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// PasswordParams is the argon2id cost of a password hash.
type PasswordParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over the memory
	Threads uint8  // lanes
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// DefaultPasswordParams returns the cost Parley uses, chosen for a 2-core server.
//
// They are OWASP's second argon2id configuration (m=46 MiB, t=1, p=1), which is as strong
// as its 19 MiB/t=2 one but spends its budget on memory, the resource that makes GPU and
// ASIC cracking expensive. One hash takes about 40 ms on one core of a current server.
//
// Threads is 1 on purpose: lanes make one hash faster on an idle machine but not more
// expensive for an attacker (who parallelises anyway), and on 2 cores a 2-lane hash
// would take both of them away from the API for each login. Memory is per hash in flight,
// so Config.MaxConcurrentHashes caps how many run at once.
//
// A 16-byte salt and a 32-byte key are RFC 9106's recommendations.
func DefaultPasswordParams() PasswordParams {
	return PasswordParams{Memory: 46 * 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

func (p PasswordParams) validate() error {
	if p.Time < 1 || p.Threads < 1 || p.Memory < 8*uint32(p.Threads) || p.SaltLen < 8 || p.KeyLen < 16 {
		return fmt.Errorf("password params out of range: %+v", p)
	}
	return nil
}

// Password length rules, counted in characters. 8 is NIST SP 800-63B's minimum; 256
// leaves room for passphrases while bounding the work a request can ask for.
const (
	minPasswordLen = 8
	maxPasswordLen = 256
)

func checkPassword(f map[string]string, pw string) {
	n := utf8.RuneCountInString(pw)
	switch {
	case !utf8.ValidString(pw):
		f["password"] = "must be valid UTF-8"
	case n < minPasswordLen:
		f["password"] = fmt.Sprintf("must be at least %d characters", minPasswordLen)
	case n > maxPasswordLen:
		f["password"] = fmt.Sprintf("must be at most %d characters", maxPasswordLen)
	}
}

// acquireHash waits for a hashing slot (see Config.MaxConcurrentHashes).
func (s *Service) acquireHash(ctx context.Context) (release func(), err error) {
	select {
	case s.hashSem <- struct{}{}:
		return func() { <-s.hashSem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// hashPassword returns the PHC string of pw:
// $argon2id$v=19$m=47104,t=1,p=1$<salt base64>$<key base64>.
func (s *Service) hashPassword(ctx context.Context, pw string) (string, error) {
	release, err := s.acquireHash(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return hashPHC(pw, s.cfg.Password), nil
}

func hashPHC(pw string, p PasswordParams) string {
	salt := make([]byte, p.SaltLen)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// verifyPassword reports whether pw matches the PHC string, and whether the hash was made
// with other parameters than the configured ones (so the caller can upgrade it).
func (s *Service) verifyPassword(ctx context.Context, pw, phc string) (ok, stale bool, err error) {
	p, salt, want, err := parsePHC(phc)
	if err != nil {
		return false, false, err
	}
	release, err := s.acquireHash(ctx)
	if err != nil {
		return false, false, err
	}
	defer release()
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	ok = subtle.ConstantTimeCompare(got, want) == 1
	cur := s.cfg.Password
	stale = p.Memory != cur.Memory || p.Time != cur.Time || p.Threads != cur.Threads ||
		uint32(len(want)) != cur.KeyLen || uint32(len(salt)) != cur.SaltLen
	return ok, stale, nil
}

var errBadPHC = errors.New("accounts: malformed password hash")

func parsePHC(phc string) (PasswordParams, []byte, []byte, error) {
	var p PasswordParams
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, errBadPHC
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, errBadPHC
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, errBadPHC
			}
			p.Threads = uint8(n)
		default:
			return p, nil, nil, errBadPHC
		}
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	key, err2 := b64.DecodeString(parts[5])
	// The upper bound on memory (1 GiB) keeps a corrupted row from exhausting the server.
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || p.Time < 1 || p.Threads < 1 ||
		p.Memory < 8*uint32(p.Threads) || p.Memory > 1<<20 {
		return p, nil, nil, errBadPHC
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}
