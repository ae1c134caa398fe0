package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkAllow measures Allow on real stores with a limit high enough never to deny
// (2^30 a minute, so the lease is MaxLease). "lease=1000" is the default leasing;
// "lease=1" (MaxLease 1) is the same limiter with a store round trip on every request,
// for comparison. The storecalls/1000req metric is the store round trips per 1,000
// requests.
func BenchmarkAllow(b *testing.B) {
	const limit = 1 << 30
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			f := k.open(b)
			for _, maxLease := range []int{DefaultMaxLease, 1} {
				name := "lease=" + strconv.Itoa(maxLease)
				b.Run(name, func(b *testing.B) {
					store := &counting{Store: f.store}
					l := newLimiter(b, Config{MaxLease: maxLease}, store)
					bucket := "user:bench-" + name + "-" + strconv.Itoa(b.N)
					ctx := context.Background()
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						if d, err := l.Allow(ctx, bucket, limit); err != nil || !d.Allowed {
							b.Fatal(d, err)
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(store.calls.Load())*1000/float64(b.N), "storecalls/1000req")
				})
				// Many goroutines: one hot bucket (coalescing) and many buckets.
				for _, buckets := range []int{1, 64} {
					name := name + "/parallel/buckets=" + strconv.Itoa(buckets)
					b.Run(name, func(b *testing.B) {
						store := &counting{Store: f.store}
						l := newLimiter(b, Config{MaxLease: maxLease}, store)
						var seq atomic.Int64
						names := make([]string, buckets)
						for i := range names {
							names[i] = "user:bench-" + name + "-" + strconv.Itoa(b.N) + "-" + strconv.Itoa(i)
						}
						b.ReportAllocs()
						b.ResetTimer()
						b.RunParallel(func(pb *testing.PB) {
							i := int(seq.Add(1))
							ctx := context.Background()
							for pb.Next() {
								i++
								if d, err := l.Allow(ctx, names[i%buckets], limit); err != nil || !d.Allowed {
									b.Error(d, err)
									return
								}
							}
						})
						b.StopTimer()
						b.ReportMetric(float64(store.calls.Load())*1000/float64(b.N), "storecalls/1000req")
					})
				}
			}
		})
	}
}
