module leaktrace.test/leaky

// The oldest Go the tests build with (xtask/src/golang.rs); newer toolchains build it as is.
go 1.23
