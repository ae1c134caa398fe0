package agents

import (
	"context"
	"testing"
)

// BenchmarkGet measures the read path behind GET /v1/agents/{id}: GetJSON serves the
// pre-rendered view, Get also decodes it into an Agent.
func BenchmarkGet(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	ten := e.tenant(b)
	a := e.create(b, ten, fullAgent)
	for range 200 { // other rows, so the lookup is a real index probe
		e.create(b, ten, `{"agent_name": "filler"}`)
	}
	b.Run("GetJSON", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4) // 8 goroutines on 2 cores: keep Postgres busy, as a server would
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.svc.GetJSON(ctx, ten, a.ID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4) // 8 goroutines on 2 cores: keep Postgres busy, as a server would
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.svc.Get(ctx, ten, a.ID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
