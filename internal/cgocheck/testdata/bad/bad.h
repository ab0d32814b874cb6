int shim_two(int a, int b);
