// Command goprobe is arena-harness's `go` probe: a real Go runtime grows its heap by the model's
// growth plan and reports where its heap arenas landed, in the model's JSON document (schema 1).
// harness/probes/go.py builds its command line and reads what it prints; images/recipes.py
// (GoProbe) builds it with Debian's golang-go, CGO_ENABLED=0, for each architecture.
//
//	goprobe [-grow PLAN] [-touch-every SIZE]
//
// PLAN is allocator/runtime.py parse_grow's syntax: comma-separated [grow:|sysalloc:]SIZE[*COUNT]
// (default "64M*8,sysalloc:64M", the model's DEFAULT_GROW). A grow step is make([]byte, SIZE).
// The model's sysalloc step calls the runtime's (*mheap).sysAlloc directly and records a nil;
// Go code cannot call it, so here a sysalloc step is done as a grow and recorded with
// "as": "grow" (where the model would record a failed sysAlloc, Go dies "out of memory").
// SIZE of -touch-every: one byte is written every SIZE bytes of each block (0: none; default
// 1M, the model's DEFAULT_TOUCH_EVERY). Every block stays reachable until the end.
//
// Output, on stdout: after each block, one line {"grew":i,"addr":"0x...","kind":K,"size":N,
// "arena":["0x...","0x..."]} (arena: the heap arenas the block lies in), then one final
// document line. When the runtime dies it prints "fatal error: MESSAGE" on stderr
// (runtime/panic.go, throw: print("fatal error: ", s, "\n")) and no document: the harness
// makes the crash document from that and the block lines. Standard library only, no cgo.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const (
	ptrBits = 32 << (^uintptr(0) >> 63)
	// runtime/malloc.go: logHeapArenaBytes = (6+20)*(_64bit*(1-goos.IsWindows)*...) + (2+20)*(1-_64bit)...:
	// a heap arena is 64 MiB on 64-bit Linux and 4 MiB on 32-bit; sysAlloc hands out whole,
	// aligned arenas ("The returned pointer is always heapArenaBytes-aligned").
	arenaBytes = 1 << (22 + 4*(ptrBits/64))
	// runtime/malloc.go, mallocinit, 64-bit: for i := 0x7f; i >= 0; i-- { p = uintptr(i)<<40 |
	// uintptrMask&(0x00c0<<32) } (0x0040<<32 when GOARCH == "arm64"), each pushed on the front of
	// the list, so i = 0 is tried first; sysAlloc takes the first hint the kernel honours, and
	// "All of the hints failed, so we'll take any (sufficiently aligned) address the kernel will give us."
	hintLowBits = 1<<40 - 1
	hintCount   = 0x80

	maxGrowSteps = 10000   // allocator/runtime.py MAX_GROW_STEPS
	maxGrowBytes = 1 << 50 // and MAX_GROW_BYTES
	defaultGrow  = "64M*8,sysalloc:64M"

	mapFixedNoreplace = 0x100000 // MAP_FIXED_NOREPLACE (Linux 4.17); not in package syscall
)

func hintBase() uint64 {
	if runtime.GOARCH == "arm64" {
		return 0x0040 << 32
	}
	return 0x00c0 << 32
}

// -- the growth plan, as allocator/runtime.py parse_grow and allocator/simulated.py parse_size --

type step struct {
	kind string
	size uint64
}

var units = map[byte]uint64{'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}

// parseSize reads "64M", "1.5G", "64MiB", "64MB" or a number of bytes; a size past 1 PiB is
// reported as maxGrowBytes+1, which the callers refuse as too large.
func parseSize(text string) (uint64, error) {
	t := strings.TrimSpace(text)
	low := strings.ToLower(t)
	var suffix byte
	switch {
	case len(low) > 3 && (strings.HasSuffix(low, "kib") || strings.HasSuffix(low, "mib") ||
		strings.HasSuffix(low, "gib") || strings.HasSuffix(low, "tib")):
		suffix, t = low[len(low)-3], t[:len(t)-3]
	case len(low) > 1 && low[len(low)-1] == 'b' && units[low[len(low)-2]] != 0:
		suffix, t = low[len(low)-2], t[:len(t)-2]
	case len(low) > 0 && units[low[len(low)-1]] != 0:
		suffix, t = low[len(low)-1], t[:len(t)-1]
	}
	unit := uint64(1)
	if suffix != 0 {
		unit = units[suffix]
	}
	for _, c := range t {
		if (c < '0' || c > '9') && c != '.' {
			return 0, fmt.Errorf("not a size")
		}
	}
	if strings.Contains(t, ".") {
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return 0, fmt.Errorf("not a size")
		}
		if v*float64(unit) > maxGrowBytes {
			return maxGrowBytes + 1, nil
		}
		return uint64(v * float64(unit)), nil // Python's int(): truncated
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil && err.(*strconv.NumError).Err == strconv.ErrRange || err == nil && n > maxGrowBytes/unit {
		return maxGrowBytes + 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("not a size")
	}
	return n * unit, nil
}

// planSize is parse_grow's size syntax: [0-9.]{1,20}[kKmMgG]?(?:i?[bB])?
func planSize(s string) bool {
	n := len(s) - len(strings.TrimLeft(s, "0123456789."))
	if n < 1 || n > 20 {
		return false
	}
	rest := s[n:]
	if rest != "" && strings.IndexByte("kKmMgG", rest[0]) >= 0 {
		rest = rest[1:]
	}
	return rest == "" || rest == "b" || rest == "B" || rest == "ib" || rest == "iB"
}

func parsePlan(plan string) ([]step, error) {
	var steps []step
	total := uint64(0)
	for _, item := range strings.Split(plan, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		shown := item
		if len(shown) > 40 {
			shown = shown[:37] + "..."
		}
		bad := func(why string) error { return fmt.Errorf("bad growth step '%s': %s", shown, why) }
		kind, rest := "grow", item
		if i := strings.IndexByte(item, ':'); i >= 0 {
			kind, rest = item[:i], item[i+1:]
			if kind == "" || strings.Trim(kind, "abcdefghijklmnopqrstuvwxyz") != "" {
				return nil, bad("expected [grow:|sysalloc:]SIZE[*COUNT], e.g. 64M*8")
			}
			if kind != "grow" && kind != "sysalloc" {
				return nil, bad("kind must be one of grow, sysalloc")
			}
		}
		sizeText, countText := rest, "1"
		if i := strings.IndexByte(rest, '*'); i >= 0 {
			sizeText, countText = rest[:i], rest[i+1:]
			if countText == "" || len(countText) > 12 || strings.Trim(countText, "0123456789") != "" {
				return nil, bad("expected [grow:|sysalloc:]SIZE[*COUNT], e.g. 64M*8")
			}
		}
		size, err := parseSize(sizeText)
		if err != nil || !planSize(sizeText) {
			return nil, bad("expected [grow:|sysalloc:]SIZE[*COUNT], e.g. 64M*8")
		}
		if size == 0 {
			return nil, bad("size must be positive")
		}
		count, _ := strconv.ParseUint(countText, 10, 64)
		if count < 1 {
			return nil, bad("count must be at least 1")
		}
		if uint64(len(steps))+count > maxGrowSteps || size > (maxGrowBytes-total)/count {
			return nil, fmt.Errorf("growth plan too large at '%s': at most %d steps and %d PiB in all",
				shown, maxGrowSteps, maxGrowBytes>>50)
		}
		total += size * count
		for ; count > 0; count-- {
			steps = append(steps, step{kind, size})
		}
	}
	return steps, nil
}

// -- /proc/self/maps and the top of user space ------------------------------------------------

type span struct{ lo, hi uint64 }

// readMaps lists the mappings of /proc/self/maps, in address order, [vsyscall] left out (it lies
// above user space), as allocator/real.py read_maps does.
func readMaps() []span {
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil
	}
	var out []span
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || len(f) >= 6 && f[5] == "[vsyscall]" {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if ok && err1 == nil && err2 == nil {
			out = append(out, span{a, b})
		}
	}
	return out
}

// mapped is the part of [lo, hi) that maps covers, as spans (adjacent mappings joined).
func mapped(lo, hi uint64, maps []span) []span {
	var out []span
	for _, m := range maps {
		a, b := max64(lo, m.lo), min64(hi, m.hi)
		if a >= b {
			continue
		}
		if n := len(out); n > 0 && out[n-1].hi == a {
			out[n-1].hi = b
		} else {
			out = append(out, span{a, b})
		}
	}
	return out
}

const sysMunmap = syscall.SYS_MUNMAP

// belowTop maps one PROT_NONE page at addr with MAP_FIXED_NOREPLACE: mapped (then unmapped) or
// EEXIST means addr is user space, ENOMEM that it lies past the top; nil when the kernel ignored
// the flag (before 4.17 it is a hint). Under a tight RLIMIT_AS an ENOMEM can also be the limit's.
func belowTop(addr, page uint64) *bool {
	yes, no := true, false
	p, _, errno := syscall.Syscall6(sysMmap, uintptr(addr), uintptr(page), syscall.PROT_NONE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|mapFixedNoreplace, ^uintptr(0), 0)
	switch {
	case errno == syscall.EEXIST:
		return &yes
	case errno == syscall.ENOMEM:
		return &no
	case errno != 0:
		return nil
	}
	syscall.Syscall(sysMunmap, p, uintptr(page), 0)
	if uint64(p) == addr {
		return &yes
	}
	return nil
}

// userTop is allocator/real.py RealSpace.user_top: the highest mapping's end, refined by bisecting
// between it and the architecture's limit with one-page MAP_FIXED_NOREPLACE probes.
func userTop(maps []span, page uint64) (top, highest uint64, method string) {
	for _, m := range maps {
		highest = max64(highest, m.hi)
	}
	limit := uint64(1) << 57
	if ptrBits == 32 {
		limit = 1 << 32
	}
	lo, hi := highest-page, limit-page
	if highest < page {
		return highest, highest, "highest-mapping"
	}
	v := belowTop(hi, page)
	if v == nil {
		return highest, highest, "highest-mapping"
	}
	if *v {
		lo = hi
	} else {
		for hi-lo > page {
			mid := (lo + (hi-lo)/2) &^ (page - 1)
			if mid <= lo {
				break
			}
			v = belowTop(mid, page)
			if v == nil {
				return highest, highest, "highest-mapping"
			}
			if *v {
				lo = mid
			} else {
				hi = mid
			}
		}
	}
	return lo + page, highest, "bisection"
}

func vmSize() any {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmSize:" {
			if kb, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				return kb * 1024
			}
		}
	}
	return nil
}

func utsString[T int8 | uint8](field []T) string {
	var b []byte
	for _, c := range field {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// -- JSON, by hand: encoding/json would add some 1 MiB to a binary whose size the model counts --

type kv struct {
	k string
	v any
}
type obj []kv

func hex(p uint64) string { return "0x" + strconv.FormatUint(p, 16) }

func enc(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int:
		b.WriteString(strconv.Itoa(x))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case string:
		b.WriteByte('"')
		for _, r := range strings.ToValidUTF8(x, "\ufffd") {
			switch {
			case r == '"' || r == '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case r < 0x20:
				fmt.Fprintf(b, "\\u%04x", r)
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte('"')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			enc(b, e)
		}
		b.WriteByte(']')
	case obj:
		b.WriteByte('{')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			enc(b, e.k)
			b.WriteByte(':')
			enc(b, e.v)
		}
		b.WriteByte('}')
	default:
		panic(fmt.Sprintf("goprobe: no JSON for %T", v))
	}
}

func line(v any) {
	var b strings.Builder
	enc(&b, v)
	b.WriteByte('\n')
	os.Stdout.WriteString(b.String()) // unbuffered: each line is out before the next step can die
}

func min64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// arenaOf is the run of whole heap arenas that [p, p+n) lies in.
func arenaOf(p, n uint64) span {
	return span{p &^ (arenaBytes - 1), (p + n + arenaBytes - 1) &^ (arenaBytes - 1)}
}

var keep [][]byte // every block grown, so that none is collected

// growStep and sysallocStep are a step of the plan. A crash inside one names it in Go's traceback
// ("main.growStep(0x4000000, 0x100000)": size, stride), which is how the harness tells a step that
// died, and its kind and size, from a runtime that died before main.
//
//go:noinline
func sysallocStep(size int, every uint64) ([]byte, uint64) { return growStep(size, every) }

//go:noinline
func growStep(size int, every uint64) ([]byte, uint64) {
	b := make([]byte, size)
	touched := uint64(0)
	if every > 0 {
		for off := uint64(0); off < uint64(len(b)); off += every {
			b[off] = 1
			touched++
		}
	}
	return b, touched
}

func main() {
	// The runtime's first arena holds what it allocated before main, and this small object:
	// sysAlloc reserved it at the first hint the kernel honoured, or where the kernel chose.
	first := make([]byte, 64)
	keep = append(keep, first)
	firstArena := arenaOf(uint64(uintptr(unsafe.Pointer(&first[0]))), 1)

	growText := flag.String("grow", defaultGrow, "growth plan: [grow:|sysalloc:]SIZE[*COUNT],...")
	touchText := flag.String("touch-every", "1M", "write one byte per SIZE of each block (0: none)")
	flag.Parse()
	plan, err := parsePlan(*growText)
	if err == nil && flag.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	every, terr := parseSize(*touchText)
	if terr != nil {
		err = fmt.Errorf("-touch-every: expected a size like 1M, got '%s'", *touchText)
	}
	for _, s := range plan {
		if s.size > uint64(^uint(0)>>1) {
			err = fmt.Errorf("a %d-byte block does not fit in a Go slice on %s", s.size, runtime.GOARCH)
			break
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goprobe:", err)
		os.Exit(2)
	}

	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	page := uint64(os.Getpagesize())
	top, highest, method := userTop(readMaps(), page)
	var rlimitAS any
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_AS, &rl) == nil && rl.Cur != ^uint64(0) {
		rlimitAS = rl.Cur
	}
	facts := obj{{"user_top", hex(top)}, {"user_top_method", method}, {"highest_mapping", hex(highest)},
		{"kernel", utsString(uts.Release[:])}, {"machine", utsString(uts.Machine[:])},
		{"pointer_bits", ptrBits}, {"page_size", int(page)}, {"rlimit_as", rlimitAS},
		{"vm_size", vmSize()}, {"go_version", runtime.Version()}, {"goarch", runtime.GOARCH}}

	var growth []any
	spans := []span{firstArena}
	for i, s := range plan {
		grow := growStep
		if s.kind == "sysalloc" {
			grow = sysallocStep
		}
		b, touched := grow(int(s.size), every)
		keep = append(keep, b)
		addr := uint64(uintptr(unsafe.Pointer(&b[0])))
		a := arenaOf(addr, s.size)
		spans = append(spans, a)
		line(obj{{"grew", i + 1}, {"addr", hex(addr)}, {"kind", s.kind}, {"size", s.size},
			{"arena", []any{hex(a.lo), hex(a.hi)}}})
		st := obj{{"step", i + 1}, {"kind", s.kind}, {"size", s.size}, {"addr", hex(addr)}, {"ok", true},
			{"touched", touched}}
		if s.kind == "sysalloc" {
			st = append(st, kv{"as", "grow"})
		}
		growth = append(growth, st)
	}

	// The arenas: the runs of whole arenas holding the first object and every block, as far as
	// /proc/self/maps shows them mapped (reserved PROT_NONE or in use), joined where they touch.
	maps := readMaps()
	var arenas []span
	for _, a := range spans {
		for _, m := range mapped(a.lo, a.hi, maps) {
			arenas = joinSpan(arenas, m)
		}
	}
	var arenaList []any
	arenaStart, arenaEnd := any(nil), any(nil)
	for _, a := range arenas {
		arenaList = append(arenaList, []any{hex(a.lo), hex(a.hi)})
		if a.lo <= firstArena.lo && firstArena.lo < a.hi {
			arenaStart, arenaEnd = hex(firstArena.lo), hex(a.hi)
		}
	}

	// allocator/gomodern.py GoModern.outcome: native-32bit on 32-bit; high-arena when the first
	// arena came from a hint, os-chosen when the kernel chose its place.
	outcome, reservation := "native-32bit", any(nil)
	if ptrBits == 64 {
		base := hintBase()
		fromHint := firstArena.lo&hintLowBits == base && firstArena.lo>>40 < hintCount
		outcome = "os-chosen"
		if fromHint {
			outcome = "high-arena"
		}
		// Where the first hint's probe landed is the runtime's secret (it unmaps a miss); that the
		// first arena sits at the first hint says the hint was honoured.
		reservation = obj{{"hint", hex(base)}, {"probe", nil}, {"high_ok", firstArena.lo == base}}
	}
	line(obj{{"schema", 1}, {"policy", "go"}, {"outcome", outcome}, {"crash", nil}, {"error", nil},
		{"params", obj{{"grow", *growText}, {"touch_every", every}}},
		{"reservation", reservation},
		{"heap", obj{{"arena_start", arenaStart}, {"arena_end", arenaEnd}, {"arenas", orEmpty(arenaList)},
			{"arena_bytes", arenaBytes}}},
		{"facts", facts}, {"growth", orEmpty(growth)}, {"grows", len(plan)}, {"messages", []any{}}})
}

// joinSpan adds s to the sorted, disjoint spans, joining those it overlaps or touches.
func joinSpan(spans []span, s span) []span {
	var out []span
	for _, x := range spans {
		if x.hi < s.lo || s.hi < x.lo {
			out = append(out, x)
			continue
		}
		s = span{min64(x.lo, s.lo), max64(x.hi, s.hi)}
	}
	out = append(out, s)
	for i := len(out) - 1; i > 0 && out[i].lo < out[i-1].lo; i-- {
		out[i], out[i-1] = out[i-1], out[i]
	}
	return out
}

func orEmpty(l []any) []any {
	if l == nil {
		return []any{}
	}
	return l
}
