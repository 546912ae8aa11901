#include "hdrtab.h"
