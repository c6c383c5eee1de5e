//go:build !race

package tokenserver

const raceEnabled = false
