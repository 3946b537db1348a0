#!/bin/sh
# An arena-harness program probe, in plain sh: does this target's user space reach Go's arena hint
# 0xf8<<32? It reads where the stack ends in /proc/self/maps (the top of user space on Linux).
#
# The protocol: print one JSON line with at least "outcome" (high-arena, fallback-32bit, native-32bit,
# os-chosen or crash; "crash" then carries the message). Keys of the allocator's document (facts,
# heap, ...) are read when they have its shape. Everything else the program prints is kept as its log.
#
#   probes:
#     - {name: user-top, program: ./examples/probes/user-top.sh}
set -eu
top=""
while read -r range perms offset dev inode path; do
    [ "${path:-}" = "[stack]" ] && top=${range#*-}
done < /proc/self/maps
echo "stack ends at 0x$top"  # a log line: not JSON, kept as the probe's log
if [ -z "$top" ]; then
    echo '{"outcome": "crash", "crash": "no [stack] in /proc/self/maps"}'
elif [ $((0x$top)) -gt $((0xf8 << 32)) ]; then
    echo "{\"outcome\": \"high-arena\", \"facts\": {\"user_top\": \"0x$top\"}}"
else
    echo "{\"outcome\": \"os-chosen\", \"facts\": {\"user_top\": \"0x$top\"}}"
fi
