package wxcrypto

import "fmt"

// VerifyWeComURL answers the check WeCom (企业微信) makes when a callback
// URL is saved in its console: a GET with msg_signature, timestamp, nonce
// and echostr, where echostr is encrypted like a message body and
// msg_signature = sha1(sort(token, timestamp, nonce, echostr)) covers the
// encrypted form. It returns the decrypted echostr, which the handler must
// write back as the whole response body (no quotes, BOM or newline) within
// a second.
//
// The checks come in this order, and the first failure is returned:
// echostr size (ErrTooLarge over MaxBodySize), a key is configured
// (ErrNoKey), msg_signature against the current token, then the previous
// one (ErrSignature, compared in constant time), timestamp against the
// replay window (ErrStaleTimestamp; DefaultMaxSkew unless WithMaxSkew),
// and only then decryption with the key of the token that matched, with
// this Crypto's receiver ID as the CorpID (ErrBase64, ErrBlockSize,
// ErrPadding, ErrLength, ErrReceiverID). Nothing is decrypted before the
// signature holds.
//
// The replay window applies because WeCom stamps the check with the time
// it is made, just as it stamps messages: a check captured and sent again
// later is refused. A URL check is not recorded in a ReplayCache (only Open
// records), so the console may repeat it at will.
//
// WeCom has no plaintext mode: the method works in any Mode as long as the
// Crypto has an EncodingAESKey, and New's receiverID must be the CorpID
// (or, for a third-party suite, the suite ID). Errors read
// "wxcrypto: verify WeCom URL: ..." and never quote the decrypted bytes.
func (c *Crypto) VerifyWeComURL(msgSignature, timestamp, nonce, echostr string) ([]byte, error) {
	const op = "verify WeCom URL"
	if len(echostr) > MaxBodySize {
		return nil, fmt.Errorf("wxcrypto: %s: echostr %w (%d bytes, over %d)", op, ErrTooLarge, len(echostr), MaxBodySize)
	}
	if c.cur.block == nil && (c.prev == nil || c.prev.block == nil) {
		return nil, fmt.Errorf("wxcrypto: %s: %w (WeCom encrypts the echostr)", op, ErrNoKey)
	}
	msg, _, err := c.openEncrypted(op, msgSignature, timestamp, nonce, echostr)
	if err != nil {
		return nil, err
	}
	return msg, nil
}
