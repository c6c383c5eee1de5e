// Package interop checks wxcrypto against an independent implementation of
// WeChat's message encryption, github.com/silenceper/wechat/v2, and
// benchmarks the two side by side. It is a separate, test-only module so
// that the main module does not depend on that SDK.
//
//	go test -race ./...
//	go test -run='^$' -bench=. -benchmem ./...
package interop
