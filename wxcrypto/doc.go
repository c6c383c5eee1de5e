// Package wxcrypto implements WeChat's message security: the server URL
// check, the signatures, and the AES scheme that protects the messages
// WeChat pushes to an Official Account (and, with the CorpID as receiver ID,
// to a WeCom application). It is what package conf hands out as the
// counterpart of the Python seed's WechatConf.crypto, and it works alone:
// it depends on nothing but the standard library.
//
// # The scheme, as WeChat defines it
//
//   - signature = sha1(sort(token, timestamp, nonce)): proves that a request
//     comes from WeChat (it covers the query, not the body).
//   - msg_signature = sha1(sort(token, timestamp, nonce, Encrypt)): proves
//     that an encrypted body comes from WeChat.
//   - AES key = base64(EncodingAESKey + "="), 32 bytes; AES-256-CBC with
//     IV = key[:16]; PKCS#7 padding to a 32-byte block; the plaintext is
//     16 random bytes + the message length in bytes (4 bytes, big-endian) +
//     the message + the receiver ID (AppID or CorpID); base64 outside.
//
// # WeCom
//
// WeCom (企业微信) uses the same scheme with the CorpID as receiver ID: give
// it to New. Its callback URL check differs from the Official Account's:
// the echostr comes encrypted, covered by msg_signature, and must be
// decrypted and echoed; VerifyWeComURL does that (VerifyURL too, in
// compatible and safe mode, when the query carries msg_signature).
//
// # Modes
//
// Normal: messages are plaintext; only the query signature is checked.
// Compatible: WeChat sends plaintext and an <Encrypt> copy together; the
// encrypted copy is authenticated, decrypted and used. Safe: everything is
// encrypted, and a plaintext message is refused.
//
// Only encrypted messages are authenticated end to end: the plain signature
// does not cover the body, so choose Safe mode where that matters. Replays
// are bounded by default: a request stamped more than DefaultMaxSkew from
// the clock is refused (WithMaxSkew changes the window).
//
// # Limits
//
// Bodies and ciphertexts over MaxBodySize, and XML nested deeper than
// MaxXMLDepth, are refused by every entry point before they cost memory,
// and no error quotes decrypted bytes.
//
// # Key rotation
//
// WithPrevious keeps the old Token and EncodingAESKey working beside the new
// ones. Deploy the new pair as current with the old one as previous, then
// save the new pair in the WeChat console: messages signed with either pair
// are accepted (and answered with the pair they came with) so no message is
// lost during the change. Drop the previous pair once the console shows the
// new one is in use.
//
// # Errors
//
// Every failure caused by input or configuration wraps one of the exported
// sentinel errors (ErrKeyLength, ErrPadding, ErrSignature, ...) so callers
// can match it with errors.Is, and
// reads "wxcrypto: <operation>: <what was wrong>". Tokens and keys never
// appear in errors or in String output. Malformed input never panics: the
// decryption and the envelope parser are fuzzed.
//
// A Crypto is immutable after New and safe for concurrent use.
package wxcrypto
