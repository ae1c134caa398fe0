//go:build !unix

package dispatch

import "time"

// processCPUTime is not measured outside Unix: the default load is then jobs/MaxJobs
// alone.
func processCPUTime() time.Duration { return 0 }
