package knowledge

import (
	"strconv"

	"github.com/parleyhq/parley/internal/errs"
)

// Errors callers can test for with errors.Is.
var (
	ErrNotFound       = errs.NotFound("knowledge_base_not_found", "Knowledge base not found")
	ErrSourceNotFound = errs.NotFound("source_not_found", "Source not found")
	ErrEmptyQuery     = errs.Invalid(map[string]string{"query": "must not be empty"})
)

func tooLarge(what string, limit int64) error {
	return errs.New(errs.KindTooLarge, "content_too_large", what+" exceeds the limit of "+humanBytes(limit))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
