// hello: a static program for any GOARCH that arena-harness exec delivers into a target. It prints
// its architecture and arguments on stdout, one line on stderr, and exits with status 7, so a test
// sees both streams apart and the exit status passed through.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

func main() {
	fmt.Printf("hello from %s %s\n", runtime.GOARCH, strings.Join(os.Args[1:], " "))
	fmt.Fprintln(os.Stderr, "to stderr")
	os.Exit(7)
}
