/** The package version, in a module of its own so `ckpt --version` answers without loading the CLI. */
export const VERSION = '0.1.0';
