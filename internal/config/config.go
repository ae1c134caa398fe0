// Package config reads Parley's settings from the environment into typed component
// configs. Every variable is declared once with its default and meaning, so that
// `parley env` can list them all and a test can check the README documents each one.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Var is one documented environment variable.
type Var struct {
	Name    string
	Default string
	Help    string
}

// Env reads declared variables and collects parse errors, so a bad setting is reported
// with all the others at start-up instead of one at a time.
type Env struct {
	lookup func(string) (string, bool)
	vars   map[string]Var
	errs   []string
}

// FromOS reads the process environment.
func FromOS() *Env { return New(os.LookupEnv) }

// New reads from lookup (tests pass a map).
func New(lookup func(string) (string, bool)) *Env {
	return &Env{lookup: lookup, vars: map[string]Var{}}
}

func (e *Env) get(name, def, help string) (string, bool) {
	e.vars[name] = Var{Name: name, Default: def, Help: help}
	v, ok := e.lookup(name)
	if !ok || strings.TrimSpace(v) == "" {
		return def, false
	}
	return strings.TrimSpace(v), true
}

// String reads a string.
func (e *Env) String(name, def, help string) string {
	v, _ := e.get(name, def, help)
	return v
}

// FirstString reads the first of several names that is set (aliases such as
// PARLEY_DATABASE_URL and DATABASE_URL); all are documented.
func (e *Env) FirstString(names []string, def, help string) string {
	for i, n := range names {
		h := help
		if i > 0 {
			h = "alias of " + names[0]
		}
		if v, ok := e.get(n, def, h); ok {
			for _, rest := range names[i+1:] {
				e.vars[rest] = Var{Name: rest, Default: def, Help: "alias of " + names[0]}
			}
			return v
		}
	}
	return def
}

// Int reads an integer.
func (e *Env) Int(name string, def int, help string) int {
	v, set := e.get(name, strconv.Itoa(def), help)
	if !set {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Sprintf("%s=%q: not an integer", name, v))
		return def
	}
	return n
}

// Float reads a floating-point number.
func (e *Env) Float(name string, def float64, help string) float64 {
	v, set := e.get(name, strconv.FormatFloat(def, 'g', -1, 64), help)
	if !set {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		e.errs = append(e.errs, fmt.Sprintf("%s=%q: not a number", name, v))
		return def
	}
	return f
}

// Bool reads a boolean (1/true/yes/on, 0/false/no/off).
func (e *Env) Bool(name string, def bool, help string) bool {
	v, set := e.get(name, strconv.FormatBool(def), help)
	if !set {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	e.errs = append(e.errs, fmt.Sprintf("%s=%q: not a boolean", name, v))
	return def
}

// Duration reads a Go duration ("15m", "30s").
func (e *Env) Duration(name string, def time.Duration, help string) time.Duration {
	v, set := e.get(name, def.String(), help)
	if !set {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Sprintf("%s=%q: not a duration (e.g. 15m, 30s)", name, v))
		return def
	}
	return d
}

// List reads a comma-separated list.
func (e *Env) List(name, def, help string) []string {
	v, _ := e.get(name, def, help)
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Prefixes reads a comma-separated list of CIDRs or addresses.
func (e *Env) Prefixes(name, def, help string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range e.List(name, def, help) {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		} else {
			e.errs = append(e.errs, fmt.Sprintf("%s: %q is not a CIDR or address", name, s))
		}
	}
	return out
}

// Err reports every malformed variable read so far.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("config: %s", strings.Join(e.errs, "; "))
}

// Vars lists every variable read so far, sorted by name.
func (e *Env) Vars() []Var {
	out := make([]Var, 0, len(e.vars))
	for _, v := range e.vars {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
