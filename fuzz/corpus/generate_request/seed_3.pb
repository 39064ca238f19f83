
base model*H