package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// stdin is what hash-key reads; a variable so that tests can feed it.
var stdin io.Reader = os.Stdin

func hashKeyFlags(fs *flagSet, o *options) {
	fs.StringVar(&o.keyFile, "key-file", "", "read the key from this file instead of stdin")
}

// runHashKey prints the SHA-256 (hex) of a client key, the form the keys
// of a configuration file hold so that the file need not hold the key: the
// key is read from stdin (or --key-file), never from the command line,
// which other users can read.
func runHashKey(_ context.Context, e *cmdEnv) error {
	var key string
	if e.o.keyFile != "" {
		k, err := (fileCheck{}).read("--key-file", e.o.keyFile)
		if err != nil {
			return err
		}
		key = k
	} else {
		b, err := io.ReadAll(io.LimitReader(stdin, maxSecretFile+1))
		if err != nil {
			return fmt.Errorf("reading the key on stdin: %w", err)
		}
		if len(b) > maxSecretFile {
			return usagef("stdin is over %d bytes: not a key", maxSecretFile)
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		return usagef("no key on stdin: run  wechatconf hash-key < KEYFILE  (make one with  head -c 32 /dev/urandom | base64 > KEYFILE)")
	}
	if len(key) < minKeyLen {
		return usagef("the key is too short (%d bytes): use at least %d random characters", len(key), minKeyLen)
	}
	sum := sha256.Sum256([]byte(key))
	_, err := fmt.Fprintln(e.stdout, hex.EncodeToString(sum[:]))
	return err
}
