//go:build race

package tokenserver

// raceEnabled: this test binary runs with the race detector, and so do the
// serve binary it builds and the client processes it re-executes.
const raceEnabled = true
