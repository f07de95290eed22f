#pragma once
// Every layer, for code that wants them all (models, tests).
#include "layers/activation.h"
#include "layers/conv.h"
#include "layers/dropout.h"
#include "layers/embedding.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "layers/pool.h"
#include "layers/rnn.h"
