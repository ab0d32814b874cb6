#define GOOD_CONST 3
struct good_info { int n; };
int good_two(int a, const char *b);
int good_none(void);
