package embed

// stopwords are dropped from the local model's word features: they occur in nearly every
// text, so matching on them says nothing about topic, and in a short query they take a
// large share of the vector from the words that matter. The list is the usual English one
// (close to NLTK's) plus the question words and auxiliaries that fill voice-agent and
// help-desk questions ("how do I", "what is", "can you"), and contractions as the
// tokenizer leaves them ("don't" becomes "dont"). Negations are in it too: a bag of words
// cannot tell "refunds are not possible" from "refunds are possible" anyway.
//
// Changing this list changes the vectors: bump localVersion.
var stopwords = func() map[string]struct{} {
	m := make(map[string]struct{})
	for _, w := range []string{
		"a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any",
		"are", "as", "at", "be", "because", "been", "before", "being", "below", "between",
		"both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during",
		"each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her",
		"here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into",
		"is", "it", "its", "itself", "just", "me", "might", "more", "most", "must", "my",
		"myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other",
		"our", "ours", "ourselves", "out", "over", "own", "same", "shall", "she", "should",
		"so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves",
		"then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
		"until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while",
		"who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
		"yourselves",
		// contractions, apostrophe removed; not "id" and "ill" (I'd, I'll), which are
		// also words, and "ID" is one a help centre needs
		"dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "cant", "couldnt",
		"wont", "wouldnt", "shouldnt", "havent", "hasnt", "hadnt", "im", "ive",
		"youre", "youve", "youll", "youd", "hes", "shes", "theyre", "theyve", "thats",
		"whats", "wheres", "hows", "lets",
		// fillers of spoken and typed questions
		"also", "get", "got", "please", "tell", "want", "like", "know", "need", "s", "t",
	} {
		m[w] = struct{}{}
	}
	return m
}()
