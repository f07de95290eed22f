#pragma once
#define HMER_VERSION "0.1.0"
