mod bad_input;
mod live;
mod ops;
mod permissions;
mod persistence;
mod tokens;
mod sfu;
