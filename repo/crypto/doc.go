// Package crypto holds the keys of an imago repository and seals and opens
// everything stored in it.
//
// A repository has one random 64-byte master Key: a 32-byte encryption key for
// XChaCha20-Poly1305 and a 32-byte ID key for the keyed BLAKE3 blob IDs. Every
// object and blob is sealed with a fresh random 24-byte nonce, so any changed
// bit is detected when it is opened.
//
// The master key is stored once per password in a KeyFile: plaintext JSON with
// the argon2id parameters and salt, and the master key sealed with a key
// derived from the password. Adding a password writes another KeyFile for the
// same master key; changing the master key is never needed.
//
// The byte layouts are specified in docs/FORMAT.md. The package imports no
// other imago package.
package crypto
