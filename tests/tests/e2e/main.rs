mod ops;
mod permissions;
mod live;
mod persistence;
