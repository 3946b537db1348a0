module arena-harness/hello

go 1.19
