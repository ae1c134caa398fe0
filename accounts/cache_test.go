package accounts

import (
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	t.Parallel()
	now := time.Now()
	t.Run("ttl", func(t *testing.T) {
		c := newCache[string, int](time.Minute, 10)
		c.put("a", 1, false, c.begin(), now)
		if v, ok := c.get("a", now.Add(59*time.Second)); !ok || v != 1 {
			t.Fatal("fresh entry missing")
		}
		if _, ok := c.get("a", now.Add(61*time.Second)); ok {
			t.Fatal("stale entry served")
		}
	})
	t.Run("a load that raced an eviction is not stored", func(t *testing.T) {
		c := newCache[string, int](time.Minute, 10)
		epoch := c.begin() // load starts, reads the old row…
		c.evict("other")   // …an invalidation arrives meanwhile…
		c.put("a", 1, false, epoch, now)
		if _, ok := c.get("a", now); ok {
			t.Fatal("stale load stored after an eviction")
		}
		epoch = c.begin()
		c.flush()
		c.put("a", 1, false, epoch, now)
		if _, ok := c.get("a", now); ok {
			t.Fatal("stale load stored after a flush")
		}
		epoch = c.begin()
		c.evictFunc(func(int) bool { return false })
		c.put("a", 1, false, epoch, now)
		if _, ok := c.get("a", now); ok {
			t.Fatal("stale load stored after evictFunc")
		}
	})
	t.Run("misses fill half, hits clear when full", func(t *testing.T) {
		c := newCache[int, int](time.Minute, 10)
		for i := range 20 {
			c.put(i, i, true, c.begin(), now)
		}
		if c.len() != 5 {
			t.Fatalf("%d misses cached, want 5", c.len())
		}
		for i := 100; i < 105; i++ {
			c.put(i, i, false, c.begin(), now)
		}
		if c.len() != 10 {
			t.Fatalf("len %d", c.len())
		}
		c.put(200, 200, false, c.begin(), now)
		if c.len() != 1 {
			t.Fatalf("full cache not cleared: len %d", c.len())
		}
	})
	t.Run("evictFunc", func(t *testing.T) {
		c := newCache[int, int](time.Minute, 10)
		for i := range 6 {
			c.put(i, i%2, false, c.begin(), now)
		}
		c.evictFunc(func(v int) bool { return v == 1 })
		if c.len() != 3 {
			t.Fatalf("len %d", c.len())
		}
	})
}
