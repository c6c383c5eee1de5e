//go:build race

package main

// raceEnabled makes TestMain build the end-to-end binary with -race too.
const raceEnabled = true
