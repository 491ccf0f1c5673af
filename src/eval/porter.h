// The Porter stemmer as nltk's PorterStemmer() runs it (mode NLTK_EXTENSIONS, the
// default METEOR uses): the original five steps plus nltk's irregular-form pool and
// rule extensions. Works on Unicode code points as Python strings do; lower-casing
// covers ASCII and Latin-1 capitals (other scripts' capitals are left as they are).
#pragma once

#include <string>

namespace m3d::eval {

std::string porter_stem(const std::string& word);

}  // namespace m3d::eval
