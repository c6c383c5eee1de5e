package main

// The store backends this command links in. Each registers its URL schemes
// with store.Register when imported; the command parses the built-in forms
// itself (see builtinSchemes in stores.go) and hands any other registered
// scheme to store.Open.
//
// To use a store of your own with the command, make its package call
// store.Register from an init function, add one line to a file of this
// package (a copy of the command, or a file of your own beside this one),
//
//	import _ "example.com/etcdstore"
//
// and go build: --store etcd://... then works like the built-in forms.
import (
	_ "github.com/wechatconf/wechatconf/store/boltstore"
	_ "github.com/wechatconf/wechatconf/store/memcachestore"
	_ "github.com/wechatconf/wechatconf/store/pgstore"
	_ "github.com/wechatconf/wechatconf/store/redisstore"
)
