// gogrow grows a Go heap the way the model's growth plan does: COUNT blocks of
// SIZE bytes (default 20 of 64 MiB), one byte written per MiB, all kept alive.
// It prints its VmSize before the first block and a line per block grown; a
// crash is the runtime's own "fatal error: ..." on stderr.
// tests/integration/test_real_go.py runs it under prlimit --as beside the model.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func vmSize() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmSize:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmSize:"))
		}
	}
	return "?"
}

var keep [][]byte

func main() {
	count, size := 20, 64<<20
	if len(os.Args) > 1 {
		count, _ = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) > 2 {
		size, _ = strconv.Atoi(os.Args[2])
	}
	fmt.Printf("start VmSize %s\n", vmSize())
	for i := 1; i <= count; i++ {
		b := make([]byte, size)
		for off := 0; off < size; off += 1 << 20 {
			b[off] = 1
		}
		keep = append(keep, b)
		fmt.Printf("grew %d at %p VmSize %s\n", i, &b[0], vmSize())
	}
	fmt.Println("done")
}
