module arena-harness/goprobe

go 1.19
