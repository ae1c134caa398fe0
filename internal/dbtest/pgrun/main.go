// Command pgrun starts one throwaway PostgreSQL cluster (with pgvector), runs a command with
// PARLEY_TEST_DATABASE_URL pointing at it, and stops the cluster afterwards. `make test`
// wraps `go test ./...` in it so that every test package of the run shares one cluster.
//
//	go run ./internal/dbtest/pgrun -- go test ./...
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/parleyhq/parley/internal/dbtest"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: pgrun -- command [args...]")
		os.Exit(2)
	}
	if os.Getenv("PARLEY_TEST_DATABASE_URL") != "" {
		os.Exit(run(args))
	}
	c, err := dbtest.StartCluster(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgrun:", err)
		os.Exit(1)
	}
	os.Setenv("PARLEY_TEST_DATABASE_URL", c.URL("postgres"))
	code := run(args)
	c.Stop()
	os.RemoveAll(c.DataDir())
	os.Exit(code)
}

func run(args []string) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	signal.Ignore(syscall.SIGINT) // the child gets Ctrl-C; we clean up after it exits
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "pgrun:", err)
		return 1
	}
	return 0
}
