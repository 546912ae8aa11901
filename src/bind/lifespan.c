#include "casgi.h"
