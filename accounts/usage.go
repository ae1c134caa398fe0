package accounts

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// API key usage is counted in memory and written in batches: RecordUse is a map update
// under a mutex, and FlushUsage writes everything counted since the last flush in one
// statement, every Config.UsageFlushInterval and on Stop. A write per request would cost
// more than the request it counts.

type usageKey struct {
	keyID string
	day   int64 // days since the Unix epoch, UTC
}

type usageCount struct {
	tenantID         string
	requests, errors int64
	last             time.Time
}

type usageBuffer struct {
	mu sync.Mutex
	m  map[usageKey]*usageCount
}

// RecordUse counts one request made with p. It does nothing for JWT principals. The HTTP
// layer calls it after each request; failed marks a request that ended in an error.
func (s *Service) RecordUse(p Principal, failed bool) {
	if p.APIKeyID == "" {
		return
	}
	now := time.Now().UTC()
	k := usageKey{keyID: p.APIKeyID, day: now.Unix() / 86400}
	s.usage.mu.Lock()
	c := s.usage.m[k]
	if c == nil {
		c = &usageCount{tenantID: p.TenantID}
		s.usage.m[k] = c
	}
	c.requests++
	if failed {
		c.errors++
	}
	c.last = now
	s.usage.mu.Unlock()
}

// FlushUsage writes the usage counted so far: per-day counts into api_key_usage and the
// latest use into api_keys.last_used_at, in one statement. On failure the counts are put
// back and go out with the next flush.
func (s *Service) FlushUsage(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.usage.mu.Lock()
	pending := s.usage.m
	if len(pending) == 0 {
		s.usage.mu.Unlock()
		return nil
	}
	s.usage.m = make(map[usageKey]*usageCount, len(pending))
	s.usage.mu.Unlock()

	n := len(pending)
	var (
		tenants, keyIDs = make([]string, 0, n), make([]string, 0, n)
		days, lasts     = make([]time.Time, 0, n), make([]time.Time, 0, n)
		reqs, errCounts = make([]int64, 0, n), make([]int64, 0, n)
	)
	for k, c := range pending {
		tenants = append(tenants, c.tenantID)
		keyIDs = append(keyIDs, k.keyID)
		days = append(days, time.Unix(k.day*86400, 0).UTC())
		reqs = append(reqs, c.requests)
		errCounts = append(errCounts, c.errors)
		lasts = append(lasts, c.last)
	}
	// The join with api_keys drops counts of keys deleted meanwhile (their usage rows
	// would violate the foreign key). Each (key, day) appears once, as ON CONFLICT needs.
	_, err := s.pool.Exec(ctx, `
		WITH u AS (
			SELECT u.* FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::timestamptz[])
				AS u(tenant_id, api_key_id, day, requests, errors, last_used)
			JOIN api_keys k ON k.tenant_id = u.tenant_id AND k.id = u.api_key_id
		), ins AS (
			INSERT INTO api_key_usage (tenant_id, api_key_id, day, requests, errors)
			SELECT tenant_id, api_key_id, day, requests, errors FROM u
			ON CONFLICT (api_key_id, day) DO UPDATE
				SET requests = api_key_usage.requests + EXCLUDED.requests,
				    errors = api_key_usage.errors + EXCLUDED.errors
		)
		UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, m.last_used)
		FROM (SELECT tenant_id, api_key_id, max(last_used) AS last_used FROM u GROUP BY 1, 2) m
		WHERE k.tenant_id = m.tenant_id AND k.id = m.api_key_id`,
		tenants, keyIDs, days, reqs, errCounts, lasts)
	if err != nil {
		s.usage.mu.Lock()
		for k, c := range pending {
			if cur := s.usage.m[k]; cur != nil {
				cur.requests += c.requests
				cur.errors += c.errors
				cur.last = maxTime(cur.last, c.last)
			} else {
				s.usage.m[k] = c
			}
		}
		s.usage.mu.Unlock()
		return fmt.Errorf("accounts: flush usage: %w", err)
	}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
