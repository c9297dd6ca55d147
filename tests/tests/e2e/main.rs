mod bad_input;
mod live;
mod ops;
mod permissions;
mod persistence;
mod sfu;
mod tokens;
