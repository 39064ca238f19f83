
b2eas"Fuse"H